"""The proxy's CPU per call, in process: the fast server and the upstream pool driven through their protocol
callbacks with fake transports, no sockets and no other process.

`python -m loadtests.bench.call_cost [--calls N] [--repeats R] [--policy P] [--mode json|sse]
[--segments one|each] [--request plain|plain-session|agent|long|long-anon]` prints, for each mode, the least
`time.process_time` per call over the repeats (µs): the Python a call costs on the common path (parse,
identity, the core's decisions, headers, the inline relay, accounting, the access log line), without the
system calls a live server adds, with the C allocator's thresholds as `saga serve` sets them.
The machine is shared: compare runs side by side (e.g. a branch against main, both compiled or both pure),
never against a number from elsewhere.

How a call goes: the client's request bytes are fed to the client connection (`data_received`), the call is
sent on a pooled upstream connection whose fake transport records it, the replica's answer bytes are fed to
that connection (`data_received`; a stream in one segment or one per event), and the answer lands on the
client's fake transport. Every call is checked to have been answered (a 200 with the answer's end), so a
change that breaks the path is not measured as a speed-up.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from proxy.app import create_app
from proxy.config import ProxyConfig
from proxy.context import METRICS, POOL, RELEASER
from proxy.fast_server import FastServer, _batched_sink, access_log
from proxy.logs import BatchedLines, TimeNameMessage
from proxy.malloc_tuning import tune_malloc
from proxy.retention_release import RetentionReleaser
from proxy.upstream_pool import UpstreamPool, _Connection

T = TypeVar("T")

REPLICA = "http://127.0.0.1:9"
_KEY = ("127.0.0.1", 9, False)
_REQUEST_BODY = {
    "model": "m",
    "messages": [{"role": "user", "content": "Say hello to the benchmark, please."}],
}
_ANSWER = (
    b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"Hello there."},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}'
)
# A coding agent's call (`--request agent`): its session named in a header, a system prompt and tool
# definitions of the size such agents send (8 KiB and 24 tools, ~16 KiB), and a few turns of history.
_AGENT_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": f"tool_{i}",
            "description": "Runs one of the agent's tools on the repository. " * 8,
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string", "description": "A file path in the repository."}},
                "required": ["path"],
            },
        },
    }
    for i in range(24)
]
_AGENT_MESSAGES = [
    {"role": "system", "content": "You are a careful software engineer working in a repository. " * 128},
    {"role": "user", "content": "Fix the failing test in tests/test_parser.py."},
    {"role": "assistant", "content": "I will read the test first."},
    {"role": "tool", "content": "def test_parse():\n    assert parse('1+1') == 2\n" * 20},
]
# A coding agent deep in its task (`--request long`, `long-anon`): the same call after 160 turns of tool use,
# ~470 KB of JSON (~115k tokens), the context such agents reach; `long-anon` names no session, so the proxy
# infers it from the conversation (what a client that sends no session id costs).
_LONG_MESSAGES = _AGENT_MESSAGES + [
    message
    for turn in range(160)
    for message in (
        {"role": "assistant", "content": f"Step {turn}: I will run the tests again and read them. " * 4},
        {"role": "tool", "content": f"output {turn}:\n" + "x = compute(y) + 1  # checked\n" * 80},
    )
]
_EVENTS = 9  # content events of a streamed answer (then the finish, usage and [DONE] events)


# `--request`: the body's fields and the extra header lines of each kind of call
REQUESTS: dict[str, tuple[dict[str, Any], str]] = {
    "plain": (_REQUEST_BODY, ""),  # a one-line chat call naming no session
    "plain-session": (_REQUEST_BODY, "X-Session-Id: agent-1\r\n"),  # the same call naming its session
    "agent": (
        {"model": "m", "messages": _AGENT_MESSAGES, "tools": _AGENT_TOOLS},
        "X-Session-Id: agent-1\r\n",
    ),
    "long": (
        {"model": "m", "messages": _LONG_MESSAGES, "tools": _AGENT_TOOLS},
        "X-Session-Id: agent-1\r\n",
    ),
    "long-anon": ({"model": "m", "messages": _LONG_MESSAGES, "tools": _AGENT_TOOLS}, ""),
}


def request_bytes(stream: bool, kind: str = "plain") -> bytes:
    fields, session = REQUESTS[kind]
    return chat_request({**fields, "stream": stream}, session)


def chat_request(fields: dict[str, Any], header_lines: str = "") -> bytes:
    """A chat completions request's bytes: `fields` as its JSON body, `header_lines` ("Name: value\\r\\n"
    each) among its headers."""
    body = json.dumps(fields, separators=(",", ":")).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: saga\r\nUser-Agent: bench\r\n"
        f"Content-Type: application/json\r\n{header_lines}Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def answer_segments(stream: bool, segments: str) -> list[bytes]:
    """The replica's answer as the bytes of its reads: one read, or (`each`) one per stream event."""
    if not stream:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(
            _ANSWER
        )
        return [head + _ANSWER]
    chunk = b'{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}]}'
    events = [b"data: " + chunk + b"\n\n" for _ in range(_EVENTS)]
    events.append(
        b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},'
        b'"finish_reason":"stop"}]}\n\n'
    )
    events.append(
        b'data: {"id":"c","object":"chat.completion.chunk","choices":[],'
        b'"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}\n\n'
    )
    events.append(b"data: [DONE]\n\n")
    framed = [b"%x\r\n%b\r\n" % (len(e), e) for e in events]
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    if segments == "one":
        return [head + b"".join(framed) + b"0\r\n\r\n"]
    return [head + framed[0], *framed[1:], b"0\r\n\r\n"]


class FakeTransport:
    """Enough of an asyncio.Transport for the proxy's protocols: writes are kept, nothing is sent."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default


class Harness:
    """One client connection to the fast server and one pooled upstream connection to one replica."""

    def __init__(self, policy: str) -> None:
        config = ProxyConfig(replicas=[REPLICA], policy=policy)
        app = create_app(config)
        app[POOL] = self.pool = UpstreamPool()
        app[RELEASER] = RetentionReleaser(None, None)  # type: ignore[arg-type]  # never sends here
        app[METRICS].releaser = app[RELEASER]
        self.app = app
        self.server = FastServer(app, "/nonexistent")
        self.client = self.server()
        self.client_transport = FakeTransport()
        self.client.connection_made(self.client_transport)  # type: ignore[arg-type]
        self.upstream = _Connection()
        self.upstream_transport = FakeTransport()
        self.upstream.connection_made(self.upstream_transport)  # type: ignore[arg-type]
        self.pool._put(_KEY, self.upstream)
        self.answered = 0
        self.upstream_requests = 0

    async def call(self, request: bytes, answer: list[bytes], end: bytes) -> None:
        """One call through the proxy; checks that it was sent upstream and answered to its end."""
        client_out, upstream_out = self.client_transport.written, self.upstream_transport.written
        self.client.data_received(request)
        if not upstream_out:
            raise RuntimeError(f"the call was not sent upstream: {b''.join(client_out)[:300]!r}")
        upstream_out.clear()
        self.upstream_requests += 1
        for segment in answer:
            self.upstream.data_received(segment)
        if self.client._pending:  # a stream's last write goes out at the loop's next turn
            await asyncio.sleep(0)
        out = client_out[0] if len(client_out) == 1 else b"".join(client_out)
        client_out.clear()
        if not out.startswith(b"HTTP/1.1 200 ") or not out.endswith(end):
            raise RuntimeError(f"the call was not answered in full: {out[:300]!r}")
        self.answered += 1

    def close(self) -> None:
        self.server.close()
        self.pool.close()


@contextmanager
def _access_log_like_serve() -> Iterator[None]:
    """The access log as `saga serve` sets it up (batched, its text format), written nowhere."""
    handler = BatchedLines(io.StringIO(), TimeNameMessage())
    saved = (access_log.level, access_log.propagate)
    access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False
    try:
        yield
    finally:
        access_log.removeHandler(handler)
        access_log.setLevel(saved[0])
        access_log.propagate = saved[1]


@contextmanager
def harness_like_serve(policy: str) -> Iterator[Harness]:
    """A `Harness` whose access log is written as `saga serve` writes it (batched), with the C allocator's
    thresholds as `saga serve` sets them; closed on exit."""
    tune_malloc()
    with _access_log_like_serve():
        harness = Harness(policy)
        harness.server.access_sink = _batched_sink(access_log)
        try:
            yield harness
        finally:
            harness.close()


def run_on_uvloop(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """`main()` on uvloop as `saga serve` runs, or on asyncio's loop where uvloop is missing."""
    try:
        import uvloop

        return uvloop.run(main())
    except ImportError:  # pragma: no cover (uvloop is a dependency on Linux)
        return asyncio.run(main())


async def measure(
    policy: str, mode: str, calls: int, repeats: int, segments: str = "one", request_kind: str = "plain"
) -> dict[str, Any]:
    """Runs `repeats` rounds of `calls` calls; the least CPU per call (µs) and the counts."""
    stream = mode == "sse"
    request, answer = request_bytes(stream, request_kind), answer_segments(stream, segments)
    end = b"0\r\n\r\n" if stream else _ANSWER
    with harness_like_serve(policy) as harness:
        for _ in range(min(calls, 200)):  # warm up (caches, the first call's lookups)
            await harness.call(request, answer, end)
        per_call = []
        for _ in range(repeats):
            gc.collect()
            start = time.process_time()
            for _ in range(calls):
                await harness.call(request, answer, end)
            per_call.append((time.process_time() - start) / calls * 1e6)
    return {
        "policy": policy,
        "mode": mode,
        "segments": segments if stream else "one",
        "request": request_kind,
        "calls": calls * repeats,
        "answered": harness.answered,
        "upstream_requests": harness.upstream_requests,
        "cpu_us_per_call_min": round(min(per_call), 1),
        "cpu_us_per_call_each": [round(x, 1) for x in per_call],
    }


def _run(args: argparse.Namespace) -> list[dict[str, Any]]:
    async def main() -> list[dict[str, Any]]:
        return [
            await measure(args.policy, mode, args.calls, args.repeats, args.segments, args.request)
            for mode in args.mode.split(",")
        ]

    return run_on_uvloop(main)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000, help="calls per repeat")
    parser.add_argument("--repeats", type=int, default=5, help="repeats; the least CPU per call is reported")
    parser.add_argument("--policy", default="saga", help="the routing policy (e.g. round-robin)")
    parser.add_argument(
        "--mode", default="json,sse", help="json (whole answers), sse (streams), or json,sse (both)"
    )
    parser.add_argument("--segments", choices=("one", "each"), default="one", help="a stream's reads")
    parser.add_argument(
        "--request",
        choices=tuple(REQUESTS),
        default="plain",
        help="plain: a one-line call naming no session; agent: a coding agent's (its session in a header, "
        "an 8 KiB system prompt, 24 tool definitions, a few turns)",
    )
    parser.add_argument("--json", dest="json_out", help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.calls <= 0 or args.repeats <= 0:
        parser.error("--calls and --repeats must be > 0")
    unknown = [m for m in args.mode.split(",") if m not in ("json", "sse")]
    if unknown:
        parser.error(f"--mode takes json, sse or json,sse; got {', '.join(map(repr, unknown))}")
    results = _run(args)
    for r in results:
        print(
            f"{r['policy']:>12} {r['mode']:>4} {r['request']} ({r['segments']} segment(s)): "
            f"{r['cpu_us_per_call_min']:7.1f} µs/call (min of {r['cpu_us_per_call_each']}), "
            f"{r['answered']} answered"
        )
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
