"""A replica's ZMQ publisher of KV-cache events, as vLLM's ZmqEventPublisher (`--kv-events-config`).

Contract:
- Endpoint forms follow vLLM: an endpoint containing `*` or `::`, or an ipc:// or inproc:// one, is bound;
  any other (e.g. `tcp://127.0.0.1:5557`) is connected to, so there the subscriber binds. A fleet gives
  replica i the endpoint's port + i (as vLLM offsets the port by data-parallel rank); `tcp://127.0.0.1:*`
  binds each replica to its own ephemeral loopback port. `endpoint` is the resolved address (the bound
  port when bound). `/kv_event_sources` reports it as vLLM does (`sources()`): `{"<rank>": KVEventsConfig}`
  with this publisher's settings, the configured wildcard host kept (`tcp://*:5557`), an ephemeral port
  resolved (vLLM resolves `tcp://*:0` too).
- `emit` is the block pool's event sink: events emitted during one run of the event loop (one engine step,
  one `/reset_prefix_cache`) go out as one batch right after it, with the next sequence number from 0.
  vLLM publishes a step's events after the step's forward pass; here they go out when the step is
  scheduled, one simulated step earlier, which no consumer can tell apart on loopback.
- PUB semantics: a subscriber sees only batches sent after its subscription reached the publisher; there is
  no replay socket (`replay_endpoint` is None). Sends never block (PUB drops past its high-water mark).
  The socket is an XPUB (the same wire protocol to a SUB) so that `has_subscriber` can tell when a
  subscription has arrived: tests and harnesses wait on it instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import zmq

from simulator.kv_events import EndpointError, KvEvent, encode_message


def binds(endpoint: str) -> bool:
    """Whether vLLM's publisher binds `endpoint` (else it connects)."""
    return "*" in endpoint or "::" in endpoint or endpoint.startswith(("ipc://", "inproc://"))


def _wildcard_kept(configured: str, bound: str) -> str:
    """The bound endpoint as vLLM reports it: a configured `tcp://*:PORT` stays so, a `*` port resolved."""
    if configured.startswith("tcp://*:"):
        return "tcp://*:" + bound.rpartition(":")[2]
    return bound


def replica_endpoint(endpoint: str, index: int) -> str:
    """`endpoint` for replica `index`: a numeric tcp port shifted by `index` (vLLM's per-DP-rank offset)."""
    if index == 0 or not endpoint.startswith("tcp://"):
        return endpoint
    base, _, port = endpoint.rpartition(":")
    if not port.isdigit():
        return endpoint  # `*`: every replica binds its own ephemeral port
    return f"{base}:{int(port) + index}"


class KvEventPublisher:
    """A PUB (XPUB) socket publishing `[topic, seq, payload]` batches; see the module contract."""

    def __init__(
        self, endpoint: str, *, topic: str = "", data_parallel_rank: int = 0, hwm: int = 100_000
    ) -> None:
        self.topic = topic
        self.data_parallel_rank = data_parallel_rank
        self.hwm = hwm
        self._topic = topic.encode()
        self._sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.XPUB)
        self._sock.set_hwm(hwm)
        try:
            if binds(endpoint):
                self._sock.bind(endpoint)
                self.endpoint: str = self._sock.getsockopt(zmq.LAST_ENDPOINT).decode()
                self.configured = _wildcard_kept(endpoint, self.endpoint)
            else:
                self._sock.connect(endpoint)
                self.endpoint = self.configured = endpoint
        except zmq.ZMQError as e:
            self._sock.close(linger=0)
            raise EndpointError(f"KV events endpoint {endpoint!r}: {e}") from None
        self._seq = 0
        self._pending: list[KvEvent] = []
        self._closed = False
        self._subscriptions = 0

    @property
    def num_batches(self) -> int:
        """Batches sent so far; the last one carried sequence number `num_batches - 1`."""
        return self._seq

    def has_subscriber(self) -> bool:
        """Whether some subscription has reached the socket and not been withdrawn (never blocks)."""
        while not self._closed:
            try:
                message = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if message[:1] == b"\x01":
                self._subscriptions += 1
            elif message[:1] == b"\x00":
                self._subscriptions -= 1
        return self._subscriptions > 0

    def emit(self, event: KvEvent) -> None:
        """Queue one event; the batch goes out once the current run of the event loop ends."""
        if not self._pending:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no event loop (a synchronous caller): send at once
                self._pending.append(event)
                self.flush()
                return
        self._pending.append(event)

    def flush(self) -> None:
        """Send the queued events as one batch (nothing if none are queued or the publisher is closed)."""
        events, self._pending = self._pending, []
        if not events or self._closed:
            return
        frames = encode_message(self._topic, self._seq, time.time(), events, self.data_parallel_rank)
        self._seq += 1
        with contextlib.suppress(zmq.Again):  # past the high-water mark a PUB socket drops, as in vLLM
            self._sock.send_multipart(frames, flags=zmq.NOBLOCK)

    def sources(self) -> dict[str, dict[str, Any]]:
        """This publisher as vLLM's `/kv_event_sources` lists it: its rank (a JSON key) -> KVEventsConfig."""
        config = {
            "enable_kv_cache_events": True,
            "publisher": "zmq",
            "endpoint": self.configured,
            "replay_endpoint": None,
            "buffer_steps": 10_000,  # vLLM's default; there is no replay socket here
            "hwm": self.hwm,
            "max_queue_size": 100_000,
            "topic": self.topic,
        }
        return {str(self.data_parallel_rank): config}

    def close(self) -> None:
        """Send what is queued, then close the socket."""
        self.flush()
        self._closed = True
        self._sock.close(linger=0)
