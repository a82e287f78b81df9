"""Where a replica publishes its KV-cache events: vLLM's `GET /kv_event_sources`, read and kept (sans-IO).

Contract:
- vLLM 0.32+ answers `{"<data-parallel rank>": <its KVEventsConfig>, ...}` (`{}` when events are off): each
  rank's engine runs its own publisher, on the configured endpoint with the port offset by the rank
  (`tcp://*:5558` for rank 1 of `tcp://*:5557`). `parse_sources` turns that answer into {rank: endpoint
  to connect to}: ranks 0..MAX_RANK, a `zmq` publisher with events on, tcp:// or ipc:// only (inproc:// is
  the server's own process; such a rank is left out). A wildcard host (`*`, `0.0.0.0`, `::`, `[::]`: the
  publisher binds every interface) becomes the host of the replica's URL, brackets and all for IPv6.
- Anything else is refused as a whole (`SourcesError`): over MAX_ANSWER_BYTES, not JSON, not that shape,
  a rank out of range, an endpoint that is not `tcp://HOST:PORT` (a hostname, IPv4, bracketed IPv6 or a
  wildcard; port 1..65535) or a printable `ipc://PATH`. Nothing a replica answers can grow the proxy's
  memory past that bound.
- `SourceBook` keeps each replica's last answer: asked once; a replica that answered nothing usable (404
  from an older vLLM, an error, a refused answer, no rank) is asked again at most every `retry_s`, and
  meanwhile the caller falls back to `kv_events.port` (proxy/kv_events.py). A usable answer is kept until
  the replica leaves the set (a restarted vLLM keeps its configured endpoints).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated
from urllib.parse import urlsplit

import msgspec

MAX_RANK = 1023
MAX_ANSWER_BYTES = 512 * 1024  # 1,024 ranks of vLLM's ~250-byte configs, and room to spare
MAX_ENDPOINT_CHARS = 1024
_WILDCARDS = frozenset({"*", "0.0.0.0", "::", "[::]", ""})
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


class SourcesError(ValueError):
    """A `/kv_event_sources` answer this proxy will not use; the message says why."""


class _Source(msgspec.Struct):
    """The fields read of vLLM's KVEventsConfig (the rest are skipped)."""

    endpoint: Annotated[str, msgspec.Meta(max_length=MAX_ENDPOINT_CHARS)]
    enable_kv_cache_events: bool = True
    publisher: str | None = "zmq"


_Rank = Annotated[int, msgspec.Meta(ge=0, le=MAX_RANK)]
_decoder = msgspec.json.Decoder(Annotated[dict[_Rank, _Source], msgspec.Meta(max_length=MAX_RANK + 1)])


def parse_sources(body: bytes, replica: str) -> dict[int, str]:
    """{rank: ZMQ endpoint} from `replica`'s `/kv_event_sources` answer; see the module contract."""
    if len(body) > MAX_ANSWER_BYTES:
        raise SourcesError(f"an answer of {len(body)} bytes (at most {MAX_ANSWER_BYTES})")
    try:
        sources = _decoder.decode(body)
    except (msgspec.DecodeError, RecursionError) as e:
        raise SourcesError(str(e) or "nested too deeply") from None
    out: dict[int, str] = {}
    for rank, source in sorted(sources.items()):
        if not source.enable_kv_cache_events or source.publisher != "zmq":
            continue
        if source.endpoint.startswith("inproc://"):
            continue  # inside the server's process: nothing outside can connect
        out[rank] = reachable(source.endpoint, replica)
    return out


def reachable(endpoint: str, replica: str) -> str:
    """`endpoint` as a subscriber connects to it: a wildcard host replaced by `replica`'s URL's host."""
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://") :]
        if not path or not path.isprintable():
            raise SourcesError(f"endpoint {endpoint!r}: not an ipc:// path")
        return endpoint
    if not endpoint.startswith("tcp://"):
        raise SourcesError(f"endpoint {endpoint[:100]!r}: not tcp:// or ipc://")
    host, _, port = endpoint[len("tcp://") :].rpartition(":")
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise SourcesError(f"endpoint {endpoint!r}: not a TCP port")
    if host in _WILDCARDS:
        return f"tcp://{_url_host(replica)}:{port}"
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise SourcesError(f"endpoint {endpoint!r}: not an IPv6 address") from None
        return endpoint
    if not _HOSTNAME.fullmatch(host):
        raise SourcesError(f"endpoint {endpoint!r}: not a host name or address")
    return endpoint


def _url_host(replica: str) -> str:
    host = urlsplit(replica).hostname
    if not host:
        raise SourcesError(f"replica {replica!r} names no host to put for the endpoint's wildcard")
    return f"[{host}]" if ":" in host else host


class SourceBook:
    """Each replica's last `/kv_event_sources` answer and when it was asked (module contract)."""

    def __init__(self, retry_s: float = 30.0) -> None:
        self.retry_s = retry_s
        self.answers: dict[str, tuple[dict[int, str], float]] = {}  # replica -> (ranks, asked at)

    def due(self, replica: str, now: float) -> bool:
        """Whether to ask `replica` (again) now."""
        answer = self.answers.get(replica)
        return answer is None or (not answer[0] and now - answer[1] >= self.retry_s)

    def answered(self, replica: str, ranks: dict[int, str], now: float) -> None:
        """What `replica` answered at `now`: its ranks' endpoints, {} when nothing usable."""
        self.answers[replica] = (ranks, now)

    def ranks(self, replica: str) -> dict[int, str] | None:
        """The ranks' endpoints `replica` listed, {} when it listed none, None when it was never answered."""
        answer = self.answers.get(replica)
        return None if answer is None else answer[0]

    def forget(self, replica: str) -> None:
        self.answers.pop(replica, None)
