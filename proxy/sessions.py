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
from collections.abc import Mapping
from typing import Any

import msgspec
from aiohttp import web

from proxy.context import CHAINS, CORE, GATE, KV_RESIDENCY, METRICS, RELEASER
from proxy.errors import ProxyError
from proxy.identity import IdentityError, check_id
from proxy.scheduler import RequestInfo, SchedulerCore
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
    releaser = app.get(RELEASER)  # (set at startup)
    if core.releases and releaser is not None:  # the KV its last call asked a replica to keep is of no use
        releaser.release(core.take_releases())
    return True


async def end_session_route(request: web.Request) -> web.Response:
    try:
        session_id = check_id("session id", request.match_info["session_id"])
    except IdentityError as e:
        raise ProxyError(400, e.message, param="session_id", code="invalid_identity") from e
    if not end_session(request.app, session_id):
        raise ProxyError(404, "no such session", param="session_id", code="unknown_session")
    return web.json_response({"session_id": session_id, "ended": True})


# A page of the listing is built and encoded in one step of the event loop (~2.5 µs a session): at most this
# many, so a listing of 100,000 sessions (0.5 s of one step, 7 MB) cannot stall every call in flight.
MAX_SESSIONS_PAGE = 5000


def _query_int(query: Mapping[str, str], name: str, default: int, most: int | None = None) -> int:
    """A non-negative integer query parameter (at most `most`); a ProxyError naming it otherwise."""
    raw = query.get(name)
    try:
        value = default if raw is None else int(raw)
    except ValueError:
        value = -1
    if value < 0 or (most is not None and value > most):
        bound = "" if most is None else f" of at most {most} (page with `offset`)"
        raise ProxyError(400, f"{name} must be a non-negative integer{bound}", param=name)
    return value


async def list_sessions(request: web.Request) -> web.Response:
    core = request.app[CORE]
    limit = _query_int(request.query, "limit", 1000, MAX_SESSIONS_PAGE)
    offset = _query_int(request.query, "offset", 0)
    now = core.clock()
    kv = request.app[KV_RESIDENCY]
    out: list[dict[str, Any]] = []
    total = len(core.sessions)
    # (a slice of the table's order: insertion, the order in which sessions were first seen)
    page = itertools.islice(core.sessions.items(), min(offset, total), min(offset + limit, total))
    for session_id, s in page:
        out.append(
            {
                "session_id": session_id,
                "in_flight": s.in_flight,
                "calls": getattr(s, "calls", None),
                "tenant_id": getattr(s, "tenant_id", None),
                "idle_s": round(now - s.last_seen, 3),
                # tokens of its context each replica's KV events say it caches (absent: not subscribed)
                **({} if kv is None else {"kv_resident": kv.resident_tokens(session_id)}),
            }
        )
    # (none after `limit=0`, a count alone: a client paging by it would ask for the same empty page forever)
    next_offset = offset + limit if limit and offset + limit < total else None
    answer = {"sessions": out, "total": total, "next_offset": next_offset}
    return web.Response(body=msgspec.json.encode(answer), content_type="application/json")


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
    waiting = 0 if core.admission is None else len(core.admission.waiting)
    answer = {
        # every call waiting in the proxy, as `saga_queue_depth`: held in the release queue, or first calls
        # waiting for admission (of which `admission_waiting`)
        "queued": core.snapshot().get("queued", 0) + waiting,
        "admission_waiting": waiting,
        "in_flight": len(core.in_flight),
        "calls": flights,
        "waiting": _waiting(core, now),
    }
    return web.json_response(answer)


def _waiting(core: SchedulerCore, now: float, limit: int = 1000) -> list[dict[str, Any]]:
    """The calls waiting in the proxy, at most `limit`: new workflows waiting for admission (`where`:
    "admission") and calls held in the release queue for a replica ("release-queue")."""
    entries: list[dict[str, Any]] = []
    admission, release = core.admission, core.release
    held: list[tuple[str, RequestInfo, str | None]] = []
    if admission is not None:
        held += [("admission", req, None) for req in itertools.islice(admission.waiting.items(), limit)]
    if release is not None:
        for lane_of, lane in list(release.lanes.items()):
            held += [("release-queue", h.req, lane_of) for h in itertools.islice(lane.items(), limit)]
    for where, req, replica_id in held[:limit]:
        entries.append(
            {
                "request_id": req.request_id,
                "session_id": req.session_id,
                "tenant_id": req.tenant_id,
                "where": where,
                "replica_id": replica_id,
                "age_s": round(now - req.arrived_at, 3),
            }
        )
    return entries


def _entries(answers: list[tuple[int, dict[str, Any]]], field: str) -> list[dict[str, Any]]:
    """Every worker's entries under `field`, one worker's after the other, each with its worker."""
    return [{**entry, "worker": worker} for worker, answer in answers for entry in answer.get(field, [])]


def merge_sessions(gathered: Gathered) -> web.Response:
    """Each worker's page of its own sessions, one after the other: `offset` and `limit` apply to each
    worker's table, so paging with `next_offset` until it is null visits every session once."""
    answers = gathered.json()
    total = sum(answer.get("total", 0) for _, answer in answers)
    offsets = [answer.get("next_offset") for _, answer in answers]
    next_offset = max((o for o in offsets if isinstance(o, int)), default=None)
    sessions = _entries(answers, "sessions")
    return json_answer({"sessions": sessions, "total": total, "next_offset": next_offset}, gathered)


def merge_queue(gathered: Gathered) -> web.Response:
    answers = gathered.json()
    counts = {
        key: sum(a.get(key, 0) for _, a in answers) for key in ("queued", "admission_waiting", "in_flight")
    }
    calls = _entries(answers, "calls")[:1000]
    waiting = _entries(answers, "waiting")[:1000]
    return json_answer({**counts, "calls": calls, "waiting": waiting}, gathered)


def add_routes(app: web.Application) -> None:
    add_gathered_get(app, "/saga/v1/sessions", list_sessions, merge_sessions)
    app.router.add_post("/saga/v1/sessions/{session_id}/end", end_session_route)
    add_gathered_get(app, "/saga/v1/queue", queue, merge_queue)
