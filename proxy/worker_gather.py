"""With `saga serve --workers N`, /metrics and the admin API answer for the whole proxy, not one process.

A request to /metrics or /saga/v1/* reaches whichever worker the kernel picked. `gather_workers` (an aiohttp
middleware, after authentication) makes that worker answer for all of them:
- A GET registered with `add_gathered_get` is asked of every other worker's app socket (`Gatherer`, with
  `LOCAL_HEADER: 1`) while this worker answers it itself; the route's merge function combines the answers
  (lists concatenated, counts summed, per-replica facts every worker knows alike taken once). Other GETs
  answer for this worker alone.
- Any other method under /saga/v1/ (an admin change) is ordered by worker 0 (`COORDINATOR`): another worker
  hands it there, and worker 0 applies it and broadcasts it to every other worker with `LOCAL_HEADER` (so a
  worker never re-broadcasts), one change at a time, so every worker applies the changes in one order (an add
  and a remove of one replica read by two workers at once left one worker with it and the other without).
  Worker 0 not answering (restarting), the worker that read the change broadcasts it itself. The answer
  lists the workers that applied it (`workers_applied`); a worker that did not answer (or failed with a 5xx)
  makes it a 502 OpenAI error that names them (`workers_missing`): the change stands on the workers that
  applied it.
- A request carrying `LOCAL_HEADER` is answered for this worker alone, but only when it came over a Unix
  socket (from another worker, or relayed by the fast server, which strips the header from clients' requests).
A worker that does not answer within `timeout_s` is left out and named (`workers_missing` in JSON,
`saga_workers_reporting` on /metrics) rather than failing the request. Merge functions are pure: answers in,
body out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, NamedTuple

import aiohttp
import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.auth import ADMIN_PREFIX
from proxy.context import METRICS
from proxy.errors import ProxyError, between_workers, error_body
from proxy.worker_set import LOCAL_HEADER, WorkerSet

log = logging.getLogger("saga.workers")

GATHER_TIMEOUT_S = 2.0  # a worker that has not answered by then is reported missing
# How long a relayed answer's head may take from the worker that holds what it answers (a stored response's
# head comes as soon as its replica's does, which vLLM sends at once for a retrieve, a resumed stream or a
# cancel); past it the worker counts as not answering
RELAY_HEAD_TIMEOUT_S = 10.0
COORDINATOR = 0  # the worker that orders admin changes
# Worker 0's answer to a change handed to it comes after the others' answers to its broadcast.
COORDINATED_TIMEOUT_S = 2 * GATHER_TIMEOUT_S + 1.0
# the admin token is sent on (each worker checks it), and a client key in either header it may come in
_FORWARDED = ("Authorization", "x-api-key", "Content-Type", "Accept")
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
_BROADCASTS: set[asyncio.Future[Any]] = set()  # held until each ends


class WorkerAnswer(msgspec.Struct, frozen=True):
    worker: int
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = msgspec.field(default_factory=dict)  # the ones a client acts on (`_KEPT`)


# Header fields of a worker's answer that a relayed answer keeps: a 405's `Allow`, a refusal's `Retry-After`
_KEPT = ("Allow", "Retry-After")


class Gathered(msgspec.Struct, frozen=True):
    """The answers of the workers that answered (this worker's first) and those that did not (or failed)."""

    answers: list[WorkerAnswer]
    missing: list[int]
    count: int  # workers configured
    query: dict[str, str] = msgspec.field(default_factory=dict)  # the request's query parameters

    def json(self) -> list[tuple[int, dict[str, Any]]]:
        return [(a.worker, msgspec.json.decode(a.body)) for a in self.answers]


Merge = Callable[[Gathered], web.Response]


class GatheredRoute(NamedTuple):
    merge: Merge
    any_worker: bool  # given the others' answers even when this worker refused (a graph one worker learned)


ROUTES: web.AppKey[dict[str, GatheredRoute]] = web.AppKey("gathered_routes")  # route path -> how to merge


class Gatherer:
    """Asks the other workers' app sockets; one client session per worker, made on first use."""

    def __init__(self, workers: WorkerSet, timeout_s: float = GATHER_TIMEOUT_S) -> None:
        self.workers = workers
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clients: dict[int, aiohttp.ClientSession] = {}
        self._relay_clients: dict[int, aiohttp.ClientSession] = {}  # `open_stream`'s
        self.changes = asyncio.Lock()  # held by the coordinator while a change goes to every worker

    def _client(self, worker: int, relay: bool = False) -> aiohttp.ClientSession:
        """The session to `worker`'s app: the gathers' (aiohttp's 100 connections), or, `relay`, the relays'
        (unbounded: `open_stream`)."""
        clients = self._relay_clients if relay else self._clients
        client = clients.get(worker)
        if client is None or client.closed:
            connector = aiohttp.UnixConnector(path=self.workers.app_socket(worker), limit=0 if relay else 100)
            client = clients[worker] = aiohttp.ClientSession(
                connector=connector, timeout=self.timeout, auto_decompress=False
            )
        return client

    async def ask_others(
        self, method: str, path_qs: str, headers: dict[str, str], body: bytes
    ) -> tuple[list[WorkerAnswer], list[int]]:
        """Every other worker's answer to the same request (answered for itself alone), and who gave none."""
        headers = {**headers, LOCAL_HEADER: "1"}
        others = self.workers.others()
        got = await asyncio.gather(*(self._ask(i, method, path_qs, headers, body) for i in others))
        answers = [a for a in got if a is not None]
        return answers, [i for i, a in zip(others, got, strict=True) if a is None]

    async def open_stream(
        self,
        worker: int,
        method: str,
        path_qs: str,
        headers: dict[str, str],
        body: bytes,
        read_timeout_s: float,
    ) -> aiohttp.ClientResponse:
        """One other worker's answer to the same request as it comes (its head read; release it when done):
        its head within `RELAY_HEAD_TIMEOUT_S` (a stopped worker accepts and never answers), then at most
        `read_timeout_s` between reads, not in total, since a resumed stored stream runs as long as its
        generation does (read whole within the gather timeout, one came 2 s late or not at all: the
        forty-fifth session's review). On connections of their own, unbounded in number: a relay holds its
        connection as long as its stream runs, and with aiohttp's 100 a connector, the 101st waited with no
        bound and the admin gathers sharing them timed out (the twentieth review)."""
        limit = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout.total, sock_read=read_timeout_s)
        request = self._client(worker, relay=True).request(
            method,
            "http://saga" + path_qs,
            data=body or None,
            headers={**headers, LOCAL_HEADER: "1"},
            timeout=limit,
        )
        return await asyncio.wait_for(request, RELAY_HEAD_TIMEOUT_S)

    async def ask_coordinator(
        self, method: str, path_qs: str, headers: dict[str, str], body: bytes
    ) -> WorkerAnswer | None:
        """Hands a change to the coordinator, which applies and broadcasts it; its answer, or None."""
        limit = aiohttp.ClientTimeout(total=COORDINATED_TIMEOUT_S)
        return await self._ask(COORDINATOR, method, path_qs, headers, body, limit)

    async def _ask(
        self,
        worker: int,
        method: str,
        path_qs: str,
        headers: dict[str, str],
        body: bytes,
        limit: aiohttp.ClientTimeout | None = None,
    ) -> WorkerAnswer | None:
        try:
            async with self._client(worker).request(
                method,
                "http://saga" + path_qs,
                data=body or None,
                headers=headers,
                timeout=limit or self.timeout,  # None would be no timeout at all
            ) as resp:
                content = await resp.read()
                kept = {name: resp.headers[name] for name in _KEPT if name in resp.headers}
                return WorkerAnswer(worker, resp.status, content, resp.content_type, kept)
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            log.warning("worker %d did not answer %s %s: %s", worker, method, path_qs, type(e).__name__)
            return None

    async def close(self) -> None:
        clients = [*self._clients.values(), *self._relay_clients.values()]
        self._clients, self._relay_clients = {}, {}
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


GATHERER = web.AppKey("gatherer", Gatherer)


def add_gathered_get(
    app: web.Application, path: str, handler: Handler, merge: Merge, *, any_worker: bool = False
) -> None:
    """A GET route that, with workers, answers for all of them: `merge` combines their 200 answers (this
    worker's first). A refusal here (4xx) is the answer, unless `any_worker`: then the others' answers."""
    resource = app.router.add_get(path, handler).resource
    if ROUTES not in app:
        app[ROUTES] = {}
    if resource is not None:  # keyed as the request's route names it (a pattern's regex left out)
        app[ROUTES][resource.canonical] = GatheredRoute(merge, any_worker)


async def gathering(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the client sessions to the other workers, closed with the app."""
    yield
    await app[GATHERER].close()


@web.middleware
async def gather_workers(request: web.Request, handler: Handler) -> web.StreamResponse:
    if between_workers(request):
        return await handler(request)
    if request.method not in _READS and request.path.startswith(ADMIN_PREFIX):
        return await _change(request, handler)
    resource = request.match_info.route.resource
    route = None if resource is None else request.app.get(ROUTES, {}).get(resource.canonical)
    if route is None or request.method != "GET":
        return await handler(request)
    return await _gather(request, handler, route)


def forwarded_headers(request: web.Request) -> dict[str, str]:
    """What a request asked of another worker carries of the client's: its credentials and content type."""
    return _headers(request)


def _headers(request: web.Request) -> dict[str, str]:
    return {name: request.headers[name] for name in _FORWARDED if name in request.headers}


async def _answer_here(request: web.Request, handler: Handler) -> WorkerAnswer | ProxyError:
    """This worker's own answer, as data; a refusal is kept to be raised as it was when it is the answer."""
    index = request.app[GATHERER].workers.index
    try:
        response = await handler(request)
    except ProxyError as e:
        return e
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return ProxyError(e.status, e.reason if e.text is None else e.text)
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
        raise ProxyError(500, "a gathered route answered with a stream")
    return WorkerAnswer(index, response.status, response.body, response.content_type)


async def _gather(request: web.Request, handler: Handler, route: GatheredRoute) -> web.StreamResponse:
    gatherer = request.app[GATHERER]
    others = asyncio.ensure_future(gatherer.ask_others("GET", request.path_qs, _headers(request), b""))
    try:
        here = await _answer_here(request, handler)
    except BaseException:
        others.cancel()
        raise
    answers, missing = await others
    ok = [a for a in answers if a.status == 200]
    count, query = gatherer.workers.count, dict(request.query)
    if isinstance(here, WorkerAnswer) and here.status == 200:
        # A worker that refused what this one answered is in another state: named, not merged.
        missing += [a.worker for a in answers if a.status != 200]
        return route.merge(Gathered([here, *ok], sorted(missing), count, query))
    if route.any_worker and ok:
        missing += [a.worker for a in answers if a.status >= 500]
        return route.merge(Gathered(ok, sorted(missing), count, query))
    if isinstance(here, ProxyError):
        raise here
    return web.Response(status=here.status, body=here.body, content_type=here.content_type)


async def _change(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An admin change: handed to the coordinator to order and broadcast, or broadcast from here."""
    gatherer = request.app[GATHERER]
    body = await request.read()  # kept by aiohttp: the handler reads it again
    if gatherer.workers.index != COORDINATOR:
        handed = asyncio.ensure_future(
            gatherer.ask_coordinator(request.method, request.path_qs, _headers(request), body)
        )
        _BROADCASTS.add(handed)  # a client that hangs up does not stop the change half-way
        handed.add_done_callback(_BROADCASTS.discard)
        answer = await asyncio.shield(handed)
        if answer is not None:
            relayed = answer.body
            return web.Response(
                status=answer.status, body=relayed, content_type=answer.content_type, headers=answer.headers
            )
        log.warning(
            "worker %d did not order admin %s %s: broadcast from here",
            COORDINATOR,
            request.method,
            request.path,
        )
    async with gatherer.changes:
        return await _broadcast(request, handler, body)


async def _broadcast(request: web.Request, handler: Handler, body: bytes) -> web.StreamResponse:
    gatherer = request.app[GATHERER]
    others = asyncio.ensure_future(
        gatherer.ask_others(request.method, request.path_qs, _headers(request), body)
    )
    # A client that hangs up does not stop the change half-way: the other workers are still told.
    _BROADCASTS.add(others)
    others.add_done_callback(_BROADCASTS.discard)
    here = await _answer_here(request, handler)
    answers, missing = await asyncio.shield(others)
    everyone: list[WorkerAnswer | ProxyError] = [here, *answers]
    applied = sorted(a.worker for a in everyone if isinstance(a, WorkerAnswer) and 200 <= a.status < 300)
    missing = sorted([*missing, *(a.worker for a in answers if a.status >= 500)])
    if isinstance(here, WorkerAnswer) and here.status >= 500:
        missing = sorted([*missing, here.worker])
    if missing:
        request.app[METRICS].errors.bump("workers_missing")
        log.error(
            "admin %s %s applied on workers %s, not on %s", request.method, request.path, applied, missing
        )
        return _missing_answer(applied, missing)
    if not applied:  # refused everywhere (a bad request, an unknown replica or session): as this worker did
        if isinstance(here, ProxyError):
            raise here
        return web.Response(status=here.status, body=here.body, content_type=here.content_type)
    # Applied where it applies (a session is known to its owner only): the first such answer, with who.
    first = next(a for a in everyone if isinstance(a, WorkerAnswer) and 200 <= a.status < 300)
    return _with_fields(first, {"workers_applied": applied})


def _missing_answer(applied: list[int], missing: list[int]) -> web.Response:
    message = (
        f"workers {missing} did not apply this change (no answer, or an error); it stands on workers "
        f"{applied}: retry it, or restart the workers named"
    )
    error = msgspec.json.decode(error_body(502, message, code="workers_missing"))
    error.update(workers_applied=applied, workers_missing=missing)
    return web.Response(status=502, body=msgspec.json.encode(error), content_type="application/json")


def _with_fields(answer: WorkerAnswer, fields: dict[str, Any]) -> web.Response:
    try:
        data = msgspec.json.decode(answer.body)
    except msgspec.DecodeError:
        data = None
    if not isinstance(data, dict):
        return web.Response(status=answer.status, body=answer.body, content_type=answer.content_type)
    data.update(fields)
    return web.Response(status=answer.status, body=msgspec.json.encode(data), content_type="application/json")


def json_answer(data: dict[str, Any], gathered: Gathered) -> web.Response:
    """A merged JSON answer, saying which workers it covers."""
    data["workers"] = gathered.count
    data["workers_missing"] = gathered.missing
    return web.Response(body=msgspec.json.encode(data), content_type="application/json")


# -- merging rules shared by the routes --------------------------------------------------------------------


def sum_numbers(values: Iterable[Any]) -> Any:
    """Numbers summed, dicts merged key by key (recursively), anything else the first value's."""
    items = list(values)
    first = items[0]
    if isinstance(first, bool) or not isinstance(first, int | float | dict):
        return first
    if isinstance(first, dict):
        keys: dict[str, None] = {}
        for item in items:
            if isinstance(item, dict):
                keys.update(dict.fromkeys(item))
        return {k: sum_numbers([i[k] for i in items if isinstance(i, dict) and k in i]) for k in keys}
    return sum(i for i in items if isinstance(i, int | float) and not isinstance(i, bool))


_BREAKER_ORDER = {"closed": 0, "half-open": 1, "open": 2}

# How each per-replica field of /saga/v1/state and /saga/v1/replicas combines across workers. A worker's own
# accounting is summed; what every worker scrapes alike from the replica is taken once (the highest, the
# freshest load any worker saw); health is the worst any worker sees. Fields not named: the first worker's.
REPLICA_FIELDS: dict[str, Callable[[list[Any]], Any]] = {
    "in_flight": sum,
    "queued": sum,
    "reserved_tokens": sum,
    "waiting": max,
    "running": max,
    "kv_usage": max,
    "kv_capacity_tokens": lambda vs: max((v for v in vs if v is not None), default=None),
    "cpu_kv_tier": any,
    "slowness": max,  # (each worker measures its own calls)
    "kv_capacity_assumed": all,  # (a worker that read the replica's page knows its capacity)
    "healthy": all,
    "draining": any,
    "breaker": lambda vs: max(vs, key=lambda v: _BREAKER_ORDER.get(v, 3)),
    "probe_error": lambda vs: next((v for v in vs if v), None),
    "models": lambda vs: sorted({m for v in vs for m in v}),
}


# Each worker's totals already include the other workers' share as last synced (proxy/load_sync.py): summing
# them would count every call and reservation once per worker, so a row is reduced to its worker's own part.
_FOREIGN_PARTS = (("in_flight", "foreign_in_flight"), ("reserved_tokens", "foreign_reserved_tokens"))


def _own_share(row: dict[str, Any]) -> dict[str, Any]:
    if not any(foreign in row for _, foreign in _FOREIGN_PARTS):
        return row
    own = dict(row)
    for total, foreign in _FOREIGN_PARTS:
        part = own.pop(foreign, 0)
        if total in own and isinstance(part, int | float):
            own[total] -= part
    return own


def merge_replica_rows(rows_per_worker: Iterable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per-replica rows from every worker, one row per replica (in first-seen order) by `REPLICA_FIELDS`."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for rows in rows_per_worker:
        for row in rows:
            grouped.setdefault(str(row.get("replica_id")), []).append(_own_share(row))
    merged = []
    for rows in grouped.values():
        out = dict(rows[0])
        for field, combine in REPLICA_FIELDS.items():
            values = [r[field] for r in rows if field in r]
            if values:
                out[field] = combine(values)
        merged.append(out)
    return merged
