"""`vllm.endpoint_plugins` entry `saga_retention`: the retention contract's HTTP surface on vLLM's API server.

Contract (docs/retention-api.md, answered as the simulated replica answers):
- `POST /saga/v1/retain {"session_id", "ttl_s", "priority"?}` re-arms a retention (404 when the session
  holds none), `POST /saga/v1/release {"session_id"}` drops one, `GET /saga/v1/retained` lists them; errors
  in vLLM's shape `{"error": {"message", "type", "param", "code"}}`. Each is one utility call to the engine
  core's `saga_retention` method (saga_vllm_plugin.engine_hook), which runs on the engine thread.
- A middleware checks the retention fields of `POST /v1/chat/completions`, `/v1/completions` and
  `/v1/responses` before vLLM sees the request: `vllm_xargs.saga_retain_ttl_s` a positive finite number (or
  numeric string) with a session id (body `session_id`, else `X-Session-ID`, as vLLM picks it, else
  `vllm_xargs.session_id`) of at most
  `MAX_SESSION_ID_CHARS` (the retention table's cap; also in `retain` and `release`), `saga_retain_priority`
  an integer (or integer string) in the signed 64-bit range (what the engine's msgpack carries); else 400.
  The body is passed on unchanged.
- `/metrics` gains `saga:retained_blocks`, `saga:retained_sessions` (gauges) and
  `saga:retentions_dropped_total` (counter), labelled `model_name` and `engine` like vLLM's; the middleware
  refreshes them from the engine before each scrape (single API server; not under PROMETHEUS_MULTIPROC_DIR).
"""

from __future__ import annotations

import json
import logging
import math
from argparse import Namespace
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from saga_vllm_plugin import check_vllm_version
from saga_vllm_plugin.engine_hook import METHOD
from saga_vllm_plugin.retention_table import PRIORITY_MAX, PRIORITY_MIN, check_session_id, retain_priority

log = logging.getLogger("vllm.saga_vllm_plugin")  # under vLLM's logger: its handlers and level apply

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# vLLM's routes that take `vllm_xargs` (the Responses API's too: a non-finite priority sent there stopped the
# engine before it was checked here)
GENERATE_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses"})
_ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 501: "NotImplementedError"}


def error(status: int, message: str) -> JSONResponse:
    body = {"error": {"message": message, "type": _ERROR_TYPES.get(status, "Error"), "param": None}}
    body["error"]["code"] = status
    return JSONResponse(body, status_code=status)


class _Engine:
    """The engine client and the last stats it reported (for the metrics collector)."""

    client: Any = None
    model_name = ""
    stats: dict[str, int] = {"blocks": 0, "sessions": 0, "dropped": 0}

    @classmethod
    async def call(cls, op: str, body: dict[str, Any]) -> dict[str, Any]:
        if cls.client is None:
            return {"status": 501, "message": "no engine behind this server"}
        reply: dict[str, Any] = await cls.client.engine_core.call_utility_async(METHOD, op, body)
        return reply


class RetentionCollector:
    """Prometheus collector over the engine's last reported retention stats."""

    def collect(self) -> Iterator[Any]:
        labels = ["model_name", "engine"]
        values = [_Engine.model_name, "0"]
        stats = _Engine.stats
        blocks = GaugeMetricFamily(
            "saga:retained_blocks", "KV blocks held by session retentions (distinct blocks).", labels=labels
        )
        blocks.add_metric(values, stats["blocks"])
        sessions = GaugeMetricFamily(
            "saga:retained_sessions", "Sessions holding a KV retention.", labels=labels
        )
        sessions.add_metric(values, stats["sessions"])
        dropped = CounterMetricFamily(
            "saga:retentions_dropped",
            "KV retentions released before their TTL, by the retention cap or memory pressure.",
            labels=labels,
        )
        dropped.add_metric(values, stats["dropped"])
        yield from (blocks, sessions, dropped)


async def _refresh_stats() -> None:
    reply = await _Engine.call("stats", {})
    if reply.get("status") == 200:
        _Engine.stats = reply["body"]


# ---- request validation ------------------------------------------------------------------------------


def retention_field_error(body: Any, headers: dict[str, str]) -> str | None:
    """Why a generation request's retention fields are malformed, or None (also for bodies vLLM rejects)."""
    if not isinstance(body, dict):
        return None
    xargs = body.get("vllm_xargs")
    if not isinstance(xargs, dict):
        return None
    raw_ttl = xargs.get("saga_retain_ttl_s")
    if raw_ttl is not None:
        try:
            if isinstance(raw_ttl, bool):
                raise ValueError
            ttl = float(raw_ttl)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer past float's range
            return f"vllm_xargs.saga_retain_ttl_s must be a number, got {raw_ttl!r}."
        if not (math.isfinite(ttl) and ttl > 0):
            return f"saga_retain_ttl_s: a retention TTL must be a positive number of seconds, got {ttl}"
        # in vLLM's order (its `_get_session_id`: the body's, then the header), then the xargs' the
        # scheduler falls back to (`retain_args`)
        session = body.get("session_id") or headers.get("x-session-id") or xargs.get("session_id")
        if not isinstance(session, str) or not session:
            return "saga_retain_ttl_s needs a session id to retain the KV under."
        try:
            check_session_id(session)
        except ValueError as e:
            return f"saga_retain_ttl_s: {e}"
    raw_priority = xargs.get("saga_retain_priority")
    if raw_priority is not None:
        try:
            retain_priority(raw_priority)
        except ValueError:
            return f"vllm_xargs.saga_retain_priority must be an integer, got {raw_priority!r}."
    return None


class RetentionMiddleware:
    """Pure ASGI: validates retention fields of generation requests (body replayed unchanged) and refreshes
    the retention metrics before `/metrics` is served."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path.rstrip("/") == "/metrics":
            try:
                await _refresh_stats()
            except Exception:  # the scrape goes on with the last values
                log.exception("saga_vllm_plugin: could not read retention stats")
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST" or path not in GENERATE_PATHS:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay(message, receive), send)
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        raw = b"".join(chunks)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            body = None  # vLLM answers it
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        problem = retention_field_error(body, headers)
        if problem is not None:
            await error(400, problem)(scope, receive, send)
            return
        first = {"type": "http.request", "body": raw, "more_body": False}
        await self.app(scope, _replay(first, receive), send)


def _replay(first: Message, receive: Receive) -> Receive:
    """A receive that gives `first` (the body, read whole), then waits on the real one (for a disconnect:
    vLLM aborts a request whose client has gone)."""
    pending = [first]

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


# ---- routes ------------------------------------------------------------------------------------------

router = APIRouter()


async def _json(request: Request) -> dict[str, Any] | JSONResponse:
    try:
        body = await request.json()
    except ValueError as e:
        return error(400, f"Invalid request body: {e}")
    except RecursionError:
        return error(400, "Invalid request body: nested too deeply")
    if not isinstance(body, dict) or not isinstance(body.get("session_id"), str):
        return error(400, "Invalid request body: `session_id` (a string) is required")
    try:
        check_session_id(body["session_id"])
    except ValueError as e:
        return error(400, f"Invalid request body: {e}")
    return body


async def _reply(op: str, body: dict[str, Any]) -> JSONResponse:
    reply = await _Engine.call(op, body)
    if reply.get("status") != 200:
        return error(int(reply.get("status", 500)), str(reply.get("message")))
    return JSONResponse(reply["body"])


@router.post("/saga/v1/retain")
async def retain(request: Request) -> JSONResponse:
    body = await _json(request)
    if isinstance(body, JSONResponse):
        return body
    ttl, priority = body.get("ttl_s"), body.get("priority")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        return error(400, "Invalid request body: `ttl_s` (a number) is required")
    try:
        ttl = float(ttl)
    except OverflowError:  # an integer past float's range
        ttl = math.inf
    if not (math.isfinite(ttl) and ttl > 0):
        return error(400, f"a retention TTL must be a positive number of seconds, got {ttl}")
    if priority is not None and (
        isinstance(priority, bool)
        or not isinstance(priority, int)
        or not PRIORITY_MIN <= priority <= PRIORITY_MAX
    ):
        return error(400, f"Invalid request body: `priority` must be an integer, got {priority!r}")
    return await _reply("retain", {"session_id": body["session_id"], "ttl_s": ttl, "priority": priority})


@router.post("/saga/v1/release")
async def release(request: Request) -> JSONResponse:
    body = await _json(request)
    if isinstance(body, JSONResponse):
        return body
    return await _reply("release", {"session_id": body["session_id"]})


@router.get("/saga/v1/retained")
async def retained() -> JSONResponse:
    return await _reply("retained", {})


class SagaRetentionEndpoints:
    """The endpoint plugin object vLLM instantiates (see the module contract)."""

    name = "saga_retention"
    required_tasks: tuple[str, ...] | None = ("generate",)

    def __init__(self) -> None:
        check_vllm_version()

    def attach_router(self, app: FastAPI) -> None:
        app.include_router(router)
        app.add_middleware(RetentionMiddleware)

    async def init_state(self, engine_client: Any, state: Any, args: Namespace) -> None:
        _Engine.client = engine_client
        served = getattr(args, "served_model_name", None)
        _Engine.model_name = served[0] if served else str(getattr(args, "model", ""))
        if not getattr(REGISTRY, "_saga_retention_registered", False):
            REGISTRY.register(RetentionCollector())  # type: ignore[arg-type]
            REGISTRY._saga_retention_registered = True  # type: ignore[attr-defined]
