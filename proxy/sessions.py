"""Sessions in the admin API: listing them and ending them explicitly.

A client ends its session with `X-Session-End: true` on its last call (ended once that call finishes) or with
`POST /saga/v1/sessions/{id}/end`. Ending forgets the session's binding and prefix-chain keys at once instead
of after `session_idle_ttl_s`. The scheduler core owns sessions: when it offers `session_ended(id)` the shell
calls it; otherwise it removes the session from the core's datastore and tells the policy's plugins, as the
core's own idle expiry does.

With workers, a session lives in the worker that owns it: the listing and the queue gather every worker's
(each entry names its `worker`), and an end is sent to all, applied by the one that knows the session.
"""

from __future__ import annotations

import itertools
from typing import Any

from aiohttp import web

from proxy.context import CHAINS, CORE, GATE, KV_RESIDENCY, METRICS
from proxy.errors import ProxyError
from proxy.identity import IdentityError, check_id
from proxy.worker_gather import Gathered, add_gathered_get, json_answer

SESSION_END_HEADER = "x-session-end"


def wants_end(headers: Any) -> bool:
    return str(headers.get(SESSION_END_HEADER, "")).strip().lower() in {"true", "1", "yes"}


def end_session(app: web.Application, session_id: str) -> bool:
    """Ends a session; False when the core did not know it."""
    core = app[CORE]
    app[CHAINS].forget_session(session_id)
    session = core.sessions.get(session_id)
    if session is None:
        return False
    app[METRICS].task_completion.observe(max(0.0, core.clock() - session.started))
    app[GATE].apply(core.session_ended(session_id))
    return True


async def end_session_route(request: web.Request) -> web.Response:
    try:
        session_id = check_id("session id", request.match_info["session_id"])
    except IdentityError as e:
        raise ProxyError(400, e.message, param="session_id", code="invalid_identity") from e
    if not end_session(request.app, session_id):
        raise ProxyError(404, "no such session", param="session_id", code="unknown_session")
    return web.json_response({"session_id": session_id, "ended": True})


async def list_sessions(request: web.Request) -> web.Response:
    core = request.app[CORE]
    try:
        limit = int(request.query.get("limit", "1000"))
    except ValueError:
        limit = -1
    if limit < 0:
        raise ProxyError(400, "limit must be a non-negative integer", param="limit")
    now = core.clock()
    kv = request.app[KV_RESIDENCY]
    out: list[dict[str, Any]] = []
    # (islice takes no stop past sys.maxsize: a limit above the table's size is the whole table)
    for session_id, s in itertools.islice(core.sessions.items(), min(limit, len(core.sessions))):
        out.append(
            {
                "session_id": session_id,
                "in_flight": s.in_flight,
                "calls": getattr(s, "calls", None),
                "idle_s": round(now - s.last_seen, 3),
                # tokens of its context each replica's KV events say it caches (absent: not subscribed)
                **({} if kv is None else {"kv_resident": kv.resident_tokens(session_id)}),
            }
        )
    return web.json_response({"sessions": out, "total": len(core.sessions)})


async def queue(request: web.Request) -> web.Response:
    core = request.app[CORE]
    now = core.clock()
    flights = [
        {
            "request_id": rid,
            "session_id": f.req.session_id,
            "tenant_id": f.req.tenant_id,
            "replica_id": f.replica_id,
            "age_s": round(now - f.req.arrived_at, 3),
        }
        for rid, f in list(core.in_flight.items())[:1000]
    ]
    queued = core.snapshot().get("queued", 0)
    return web.json_response({"queued": queued, "in_flight": len(core.in_flight), "calls": flights})


def _entries(gathered: Gathered, field: str, limit: int) -> list[dict[str, Any]]:
    """Every worker's entries under `field`, each with its worker, the first `limit` of them."""
    out: list[dict[str, Any]] = []
    for worker, answer in gathered.json():
        out.extend({**entry, "worker": worker} for entry in answer.get(field, []))
    return out[:limit]


def merge_sessions(gathered: Gathered) -> web.Response:
    limit = max(0, int(gathered.query.get("limit", "1000")))  # each worker checked it already
    total = sum(answer.get("total", 0) for _, answer in gathered.json())
    return json_answer({"sessions": _entries(gathered, "sessions", limit), "total": total}, gathered)


def merge_queue(gathered: Gathered) -> web.Response:
    answers = [answer for _, answer in gathered.json()]
    queued = sum(a.get("queued", 0) for a in answers)
    in_flight = sum(a.get("in_flight", 0) for a in answers)
    calls = _entries(gathered, "calls", 1000)
    return json_answer({"queued": queued, "in_flight": in_flight, "calls": calls}, gathered)


def add_routes(app: web.Application) -> None:
    add_gathered_get(app, "/saga/v1/sessions", list_sessions, merge_sessions)
    app.router.add_post("/saga/v1/sessions/{session_id}/end", end_session_route)
    add_gathered_get(app, "/saga/v1/queue", queue, merge_queue)
