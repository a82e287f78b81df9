"""Misbehaving replicas on loopback, for the proxy's failure tests.

`FakeReplica` speaks just enough of vLLM's surface (`/health`, `/metrics`, `/v1/models`, the two call
routes) and answers calls the way `mode` says: "ok" (a tiny JSON or SSE answer), "error-503" (5xx before any
byte), "hang" (never answers), "stall-stream" (headers and one event, then silence), "slow" (answers after
`slow_s`), "tools" (an answer calling the tool `run_tests`, streamed in pieces when asked, with the usage
chunk only when `stream_options.include_usage` is set, and usage in every chunk when `continuous_usage_stats`
is set too, as vLLM does; its SSE lines end in CRLF when `crlf` is set). In every mode a call whose body has
`"metadata": {"poison": true}` gets a 500: a request every replica refuses. `/v1/responses` answers a
Responses API object with ids `resp_1`, `resp_2`, ... A few passthrough routes (`/v1/embeddings`,
`/v1/rerank`, `/tokenize`, `/v1/audio/transcriptions`) answer their `model` only, as vLLM does (another is a
404), after `hold` is set when one is given. `GET /kv_event_sources` answers `kv_event_sources` (vLLM 0.32's
publisher list), a 404 while it is None (an older vLLM); `kv_event_sources_asked` counts the asks.
`dying_stream_replica` is a raw socket server that starts an SSE answer and drops the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from proxy.config import ProxyConfig
from proxy.worker_set import owner_of

OK_JSON = (
    b'{"id":"c1","object":"chat.completion","model":"fake","choices":[{"index":0,"message":{"role":"assistant",'
    b'"content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}'
)
SSE_EVENT = (
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
)
TOOL_JSON = (
    b'{"id":"c2","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":null,'
    b'"tool_calls":[{"id":"t1","type":"function",'
    b'"function":{"name":"run_tests","arguments":"{\\"k\\": 1}"}}]},'
    b'"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":9,"completion_tokens":4}}'
)
TOOL_EVENTS = [
    b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"t1","type":"function",'
    b'"function":{"name":"run_tests","arguments":""}}]}}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,'
    b'"function":{"arguments":"{\\"k\\""}}]}}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,'
    b'"function":{"arguments":": 1}"}}]}}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\n',
]
USAGE_EVENT = b'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4}}\n\n'


# A resumed Responses API stream (`GET /v1/responses/{id}?stream=true&starting_after=N`), as vLLM sends it
STORED_STREAM = [
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"a",'
    b'"sequence_number":3}\n\n',
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"b",'
    b'"sequence_number":4}\n\n',
    b'event: response.completed\ndata: {"type":"response.completed","response":{"id":"resp_1",'
    b'"status":"completed","usage":{"input_tokens":5,"output_tokens":2}},"sequence_number":5}\n\n',
]


class FakeReplica:
    def __init__(self, mode: str = "ok", *, metrics: str = "", slow_s: float = 0.0, model: str = "fake"):
        self.mode = mode
        self.metrics = metrics
        self.slow_s = slow_s
        self.model = model
        self.calls = 0
        self.headers: list[dict[str, str]] = []  # headers of every chat/completions call
        self.session_ids: list[object] = []  # the body's `session_id` of every chat/completions call
        self.bodies: list[dict[str, object]] = []  # bodies of "tools" and /v1/responses calls
        self.cancelled = asyncio.Event()  # a call's handler was cancelled: the proxy hung up on it
        self.passthrough_paths: list[str] = []  # the passthrough requests it answered, in order
        self.passthrough_headers: list[dict[str, str]] = []  # their headers, in order
        self.hold: asyncio.Event | None = None  # when set to an Event, passthrough answers wait for it
        self.kv_event_sources: bytes | None = None  # GET /kv_event_sources's answer; None: a 404
        self.kv_event_sources_asked = 0
        self.crlf = False  # "tools" streams end their SSE lines in CRLF (legal SSE; vLLM uses LF)
        # GET /v1/responses/{id}?stream=true of a response it answered (a background response's stream
        # resumed) sends its first event, then the rest once this is set (30 s at most); each such GET counted
        self.stored_stream_gate = asyncio.Event()
        self.stored_stream_gets = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _call(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        self.headers.append(dict(request.headers))
        body = await request.json()
        self.session_ids.append(body.get("session_id"))
        try:
            if isinstance(body.get("metadata"), dict) and body["metadata"].get("poison"):
                return web.json_response({"error": {"message": "engine error on this request"}}, status=500)
            if self.mode == "error-503":
                return web.json_response({"error": {"message": "overloaded"}}, status=503)
            if self.mode == "error-400":  # vLLM's answer to a request it cannot take (the client's mistake)
                error = {"message": "max_tokens must be at least 1", "type": "BadRequestError", "code": 400}
                return web.json_response({"error": error}, status=400)
            if self.mode == "hang":
                await asyncio.sleep(3600)
            if self.mode == "slow":
                await asyncio.sleep(self.slow_s)
            if self.mode == "tools":
                return await self._tools(request, body)
            if body.get("stream"):
                response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
                await response.prepare(request)
                await response.write(SSE_EVENT)
                if self.mode == "stall-stream":
                    await asyncio.sleep(3600)
                await response.write(b"data: [DONE]\n\n")
                await response.write_eof()
                return response
            return web.Response(body=OK_JSON, content_type="application/json")
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def _tools(self, request: web.Request, body: dict[str, object]) -> web.StreamResponse:
        self.bodies.append(body)
        if not body.get("stream"):
            return web.Response(body=TOOL_JSON, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        options = body.get("stream_options")
        usage = isinstance(options, dict) and bool(options.get("include_usage"))
        # vLLM's continuous usage: every chunk carries usage, only when include_usage is set too
        continuous = usage and isinstance(options, dict) and bool(options.get("continuous_usage_stats"))
        for event in TOOL_EVENTS:
            if continuous:
                chunk = json.loads(event.removeprefix(b"data: "))
                chunk["usage"] = {"prompt_tokens": 9, "completion_tokens": 1}
                event = b"data: " + json.dumps(chunk).encode() + b"\n\n"
            await response.write(self._lines(event))
        if usage:
            await response.write(self._lines(USAGE_EVENT))
        await response.write(self._lines(b"data: [DONE]\n\n"))
        await response.write_eof()
        return response

    def _lines(self, event: bytes) -> bytes:
        return event.replace(b"\n", b"\r\n") if self.crlf else event

    async def _responses(self, request: web.Request) -> web.Response:
        self.calls += 1
        self.bodies.append(await request.json())
        answer = {
            "id": f"resp_{self.calls}",
            "object": "response",
            "status": "completed",
            "output": [
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi"}]}
            ],
            "usage": {"input_tokens": 5, "output_tokens": 1},
        }
        return web.json_response(answer)

    async def _stored_stream(self, request: web.Request) -> web.StreamResponse:
        """vLLM's answers for a stored response: for one this replica answered (`resp_N`), the response or
        its resumed stream; for any other, vLLM's 404 (a fake answering every id would claim every one)."""
        response_id = request.match_info["response_id"]
        issued = {f"resp_{n}" for n in range(1, self.calls + 1)}
        if response_id not in issued:
            error = {"message": f"Response with id '{response_id}' not found.", "type": "NotFoundError"}
            return web.json_response({"error": {**error, "param": "response_id", "code": 404}}, status=404)
        if request.query.get("stream") != "true":  # a retrieve (the proxy's lookup of who holds it)
            return web.json_response({"id": response_id, "object": "response", "status": "completed"})
        self.stored_stream_gets += 1
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "X-Request-Id": "req-fake-1"}
        )
        await response.prepare(request)
        await response.write(STORED_STREAM[0])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stored_stream_gate.wait(), 30)
        for event in STORED_STREAM[1:]:
            await response.write(event)
        await response.write_eof()
        return response

    async def _passthrough(self, request: web.Request) -> web.Response:
        """vLLM's way with a passthrough route: the model it does not serve is a 404, else an answer."""
        if request.content_type == "multipart/form-data":
            field = (await request.post()).get("model")
            model = field if isinstance(field, str) else None
        else:
            model = (await request.json()).get("model")
        if model != self.model:
            error = {"message": f"The model `{model}` does not exist.", "type": "NotFoundError", "code": 404}
            return web.json_response({"error": error}, status=404)
        if self.hold is not None:
            await self.hold.wait()
        self.passthrough_paths.append(request.path)
        self.passthrough_headers.append(dict(request.headers))
        return web.json_response({"object": "list", "model": self.model, "data": [{"index": 0}]})

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="")

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.metrics)

    async def _kv_event_sources(self, request: web.Request) -> web.Response:
        self.kv_event_sources_asked += 1
        if self.kv_event_sources is None:
            return web.json_response({"detail": "Not Found"}, status=404)
        return web.Response(body=self.kv_event_sources, content_type="application/json")

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._call)
        app.router.add_post("/v1/completions", self._call)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_get("/v1/responses/{response_id}", self._stored_stream)
        for path in ("/v1/embeddings", "/v1/rerank", "/tokenize", "/v1/audio/transcriptions"):
            app.router.add_post(path, self._passthrough)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/kv_event_sources", self._kv_event_sources)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@contextlib.asynccontextmanager
async def fake_replica(mode: str = "ok", **kwargs: object) -> AsyncIterator[FakeReplica]:
    replica = FakeReplica(mode, **kwargs)  # type: ignore[arg-type]
    await replica.start()
    try:
        yield replica
    finally:
        await replica.stop()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One HTTP/1.1 request off a raw connection: its head (its Content-Length body is read and dropped)."""
    return (await read_request_whole(reader))[0]


async def read_request_whole(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One HTTP/1.1 request off a raw connection: its head and its Content-Length body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(handle: RawHandler) -> AsyncIterator[str]:
    """A loopback server whose connections `handle` serves, while the context is open; yields its URL."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


RawAnswer = Callable[[bytes, bytes, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_replica(answer: RawAnswer) -> AsyncIterator[str]:
    """A replica that writes its answers byte by byte: every request on a connection (its head and body) goes
    to `answer`, which writes what the replica sends back; a connection the proxy drops ends quietly. Yields
    its URL."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head, body = await read_request_whole(reader)
                await answer(head, body, writer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async with raw_server(handle) as url:
        yield url


@contextlib.asynccontextmanager
async def dying_stream_replica(partial: bool = False, events: int = 1) -> AsyncIterator[str]:
    """Answers /health with 200; answers a call with SSE headers and `events` events (with `partial`, then the
    first half of another event, in its own chunk: a replica cut mid-write), then drops the connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await read_request(reader)
            if head.startswith(b"GET"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            else:
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                    + (f"{len(SSE_EVENT):x}\r\n".encode() + SSE_EVENT + b"\r\n")
                    * events
                )
                if partial:
                    half = SSE_EVENT[: len(SSE_EVENT) // 2]
                    writer.write(f"{len(half):x}\r\n".encode() + half + b"\r\n")
            await writer.drain()
            if partial:
                await asyncio.sleep(0.2)  # read before the reset (which would discard what is unread)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.transport.abort()  # dies: no terminal chunk, no FIN handshake

    async with raw_server(handle) as url:
        yield url


@contextlib.asynccontextmanager
async def dying_whole_replica(calls: list[bytes], cut_if: bytes = b"") -> AsyncIterator[str]:
    """Answers /health with 200; answers a call (its head kept in `calls`) with a JSON head promising more
    body than it sends, half of it, then drops the connection: a replica cut mid-answer, not streaming.
    With `cut_if`, only a call whose body holds it is cut; the others are answered whole."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head, body = await read_request_whole(reader)
            if head.startswith(b"GET") or cut_if not in body:
                ok = b"" if head.startswith(b"GET") else OK_JSON
                kind = b"Content-Type: application/json\r\n"
                writer.write(b"HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n%s" % (kind, len(ok), ok))
            else:
                calls.append(head)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(OK_JSON)}\r\n\r\n".encode()
                    + OK_JSON[: len(OK_JSON) // 2]
                )
                await writer.drain()
                await asyncio.sleep(0.2)  # read before the reset (which would discard what is unread)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.transport.abort()

    async with raw_server(handle) as url:
        yield url


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Serves `app` on a free loopback port while the context is open; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def replica_app(
    chat: Callable[[web.Request], Awaitable[web.StreamResponse]], metrics: str = ""
) -> web.Application:
    """A replica for one test: `chat` answers chat completions; health answers an empty 200, metrics
    `metrics` (e.g. a `vllm:cache_config_info` line: its KV capacity)."""

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="")

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=metrics)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", ok)
    app.router.add_get("/metrics", page)
    return app


def config(replicas: list[str], **kwargs: Any) -> ProxyConfig:
    """The proxy's configuration for an end-to-end test: a free port, a seed, fast health rounds."""
    return ProxyConfig(replicas=replicas, port=0, seed=1, health_interval_s=0.1, **kwargs)


def session_owned_by(worker: int, workers: int, stem: str) -> str:
    """A session id that worker `worker` of `workers` owns (proxy/worker_set.py), so a call sent to it with
    this id is scheduled there and not handed to another worker."""
    return next(f"{stem}-{k}" for k in range(1000) if owner_of(f"{stem}-{k}", workers) == worker)
