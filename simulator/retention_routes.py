"""The KV retention endpoints of the simulated replica (docs/retention-api.md).

Contract: `POST /saga/v1/retain` re-arms a session's retention and, with `priority`, changes its priority
(404 when the session holds none), `POST /saga/v1/release` drops it (always 200, saying whether there was
one), `GET /saga/v1/retained` lists retentions and the caps. Each first expires retentions at the driver's
simulated now, since an idle engine does not step. `retain_priority_field` reads a generation request's
`vllm_xargs.saga_retain_priority` (the retention's priority; default the request's own). A priority, there
or in `retain`, outside the signed 64-bit range is a 400, as on the vLLM plugin, and so is a session id
longer than the retention table's cap, in `retain` or `release` (a generation request's: the engine's 400).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from simulator.http_common import REPLICA, HttpError, decode, json_obj
from simulator.openai_api import ReleaseRequest, ReleaseResponse, RetainedResponse, RetainRequest
from simulator.replica import Replica
from simulator.retention import PRIORITY_MAX, PRIORITY_MIN, check_session_id


def expire_retentions(replica: Replica) -> float:
    """Tick the engine's retention clock (it may be idle) to the driver's simulated now; returns now."""
    now = replica.driver.now()
    replica.engine.expire_retentions(now)
    return now


async def retain(request: web.Request) -> web.Response:
    replica = request.app[REPLICA]
    body = await decode(request, RetainRequest)
    session_id_field(body.session_id)
    if body.priority is not None and not PRIORITY_MIN <= body.priority <= PRIORITY_MAX:
        raise HttpError(400, f"Invalid request body: `priority` must be an integer, got {body.priority!r}")
    now = expire_retentions(replica)
    try:
        info = replica.engine.retention.extend(body.session_id, body.ttl_s, now, body.priority)
    except ValueError as e:
        raise HttpError(400, str(e)) from None
    if info is None:
        raise HttpError(404, f"session {body.session_id!r} holds no retained KV on this replica.")
    return json_obj(info)


async def release(request: web.Request) -> web.Response:
    replica = request.app[REPLICA]
    body = await decode(request, ReleaseRequest)
    session_id_field(body.session_id)
    expire_retentions(replica)
    num_blocks = replica.engine.release_retention(body.session_id)
    return json_obj(ReleaseResponse(body.session_id, num_blocks is not None, num_blocks or 0))


async def retained(request: web.Request) -> web.Response:
    replica = request.app[REPLICA]
    now = expire_retentions(replica)
    table = replica.engine.retention
    return json_obj(
        RetainedResponse(
            now=now,
            num_blocks=table.num_blocks,
            max_blocks=table.max_blocks,
            max_ttl_s=table.max_ttl_s,
            block_size=replica.engine.block_size,
            sessions=table.snapshot(now),
            num_references=table.num_references,
            max_references=table.max_references,
        )
    )


def session_id_field(session_id: str) -> None:
    """HttpError 400 for a session id longer than the retention table's cap (none could be held)."""
    try:
        check_session_id(session_id)
    except ValueError as e:
        raise HttpError(400, f"Invalid request body: {e}", param="session_id") from None


def retain_priority_field(vllm_xargs: dict[str, Any] | None) -> int | None:
    """A generation request's `vllm_xargs.saga_retain_priority` (an integer, or an integer string), None when
    absent; HttpError 400 otherwise. The retention then takes the request's own priority."""
    raw = (vllm_xargs or {}).get("saga_retain_priority")
    if raw is None:
        return None
    try:
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ValueError
        priority = int(raw)
        if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
            raise ValueError
        return priority
    except (TypeError, ValueError, OverflowError):
        raise HttpError(400, f"vllm_xargs.saga_retain_priority must be an integer, got {raw!r}.") from None


def add_retention_routes(app: web.Application) -> None:
    app.router.add_post("/saga/v1/retain", retain)
    app.router.add_post("/saga/v1/release", release)
    app.router.add_get("/saga/v1/retained", retained)
