"""Routes that name a stored Responses API response: `GET /v1/responses/{id}` (retrieve, `?stream=true` to
resume a background stream) and `POST /v1/responses/{id}/cancel`, as vLLM serves them.

Only the replica that stored a response can answer for it (vLLM keeps stored responses in its own memory), so
these go there: the replica this proxy saw answer it, else the one that says it holds it
(proxy/response_lookup.py). Not calls of a session: no core events, no accounting. Contract: the request is
forwarded as sent (the query string kept; the upstream key in place of a client's), the replica's answer
relayed with `X-Saga-Replica` (a whole one held to `max_answer_bytes`, as a call's); an id that cannot be one
(proxy/response_lookup.py) is a 400 that does not repeat it; a response no replica holds is a 404 with
vLLM's message (`Response with id '...' not found.`) and param (`response_id`) in the proxy's error shape
(`type` `not_found_error`, `code` `not_found`), as is, with client API keys, one this proxy recorded as
another tenant's (not forwarded: vLLM would hand it to anyone); one whose replica was removed from the
proxy since (the admin API, discovery) is a 503 naming that replica, as a continuation of it is; a holder
that cannot be reached is a 502,
one too slow a 504; with no replica serving to ask (all down), a 503. With workers, a response another
worker served (the workers' shared `responses.table`, proxy/response_owners.py) is asked of that worker,
which knows its tenant and replica, and its answer relayed as it comes (a resumed stream event by event); if
it gives no answer, a proxy with client API keys answers 502 rather than forward what it cannot check.
"""

from __future__ import annotations

import contextlib
import logging

import aiohttp
from aiohttp import web

from proxy import forward
from proxy.auth import TENANT
from proxy.context import CHAINS, CONFIG, CORE, POOL, RESPONSE_OWNERS, WORKERS
from proxy.errors import ProxyError, between_workers, mid_answer_event
from proxy.response_lookup import PLAUSIBLE_ID, find_holder
from proxy.sse_scan import numbers_for, whole_events
from proxy.upstream_pool import ConnectFailed
from proxy.worker_gather import GATHERER, forwarded_headers

log = logging.getLogger("saga.proxy")


async def stored_response(request: web.Request) -> web.StreamResponse:
    app, response_id = request.app, request.match_info["response_id"]
    if not PLAUSIBLE_ID.fullmatch(response_id):  # refused, not echoed: it would not be found anywhere
        raise ProxyError(
            400,
            "a response id is 1 to 256 letters, digits, '_' or '-'",
            param="response_id",
            code="invalid_response_id",
        )
    config, core, chains = app[CONFIG], app[CORE], app[CHAINS]
    tenant = request.get(TENANT)
    owner = _other_owner(request, response_id)
    if owner >= 0:
        relayed = await _relayed_from_owner(request, owner)
        if relayed is not None:
            return relayed
        if tenant is not None:  # its tenant is known there only: nothing is handed over unchecked
            raise ProxyError(
                502, "the proxy worker that served this response did not answer", code="worker_error"
            )
    foreign = tenant is not None and chains.foreign_response(response_id, tenant)
    recorded = "" if foreign else chains.replica_of_response(response_id)
    holder = recorded
    if not foreign and holder not in core.replicas:  # unknown here, or its replica was removed since
        holder = await find_holder(app, response_id)
    if not holder and recorded:  # removed, holding it still: said as a continuation of it is told
        raise ProxyError(
            503,
            f"replica {recorded}, the only one holding this response, is no longer served",
            code="no_replica",
        )
    if not holder and not foreign and not core.serving():  # no replica to ask: not known to be gone
        raise ProxyError(503, "no healthy replica to look this response up on", code="no_replica")
    if not holder:
        raise ProxyError(
            404, f"Response with id '{response_id}' not found.", param="response_id", code="not_found"
        )
    replica = core.replicas.get(holder)
    if replica is not None and not (replica.healthy or holder in core.draining):
        # as a continuation of it is told (a 503 with Retry-After), not tried there (a 502 after a refused
        # connect, quoting the exception: the forty-seventh session's review)
        raise ProxyError(
            503, f"replica {holder}, the only one holding this response, is down", code="no_replica"
        )
    headers = forward.forwarded_headers(forward.client_header_pairs(request), {})
    forward.upstream_auth(headers, config)
    target = holder + request.rel_url.raw_path_qs
    try:
        upstream = await app[POOL].request(
            target,
            await request.read(),
            headers,
            config.connect_timeout_s,
            request.method,
            config.first_byte_timeout_s,
        )
    except ConnectFailed as e:
        log.warning("replica %s, holding response %s, could not be reached: %s", holder, response_id, e)
        raise ProxyError(
            503,
            f"replica {holder}, the only one holding this response, could not be reached",
            code="no_replica",
        ) from e
    except TimeoutError as e:
        raise ProxyError(
            504, "the replica holding this response did not answer in time", code="upstream_timeout"
        ) from e
    downstream = forward.AiohttpDownstream(request)
    await forward.relay(
        downstream,
        upstream,
        {"X-Saga-Replica": holder},
        lambda: None,
        config.stream_idle_timeout_s,
        max_answer_bytes=config.max_answer_bytes,  # a stored response comes whole: held to the calls' limit
        path=request.path,  # (a resumed stream cut short ends with the Responses API's error event)
    )
    assert downstream.response is not None
    return downstream.response


async def _relayed_from_owner(request: web.Request, owner: int) -> web.StreamResponse | None:
    """The answer of the worker that served the response, relayed as it comes (a resumed stream event by
    event); None if that worker gave no answer's head (`open_stream`'s bounds). Once the answer has begun,
    an owner that fails ends a stream with the route's mid-answer error event (a whole answer is cut)."""
    app, config = request.app, request.app[CONFIG]
    path_qs = request.rel_url.raw_path_qs
    read_s = max(config.first_byte_timeout_s, config.stream_idle_timeout_s)
    body = await request.read()
    try:
        answer = await app[GATHERER].open_stream(
            owner, request.method, path_qs, forwarded_headers(request), body, read_s
        )
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        log.warning("worker %d did not answer %s %s: %s", owner, request.method, path_qs, type(e).__name__)
        return None
    # every header but hop-by-hop ones, as the direct path relays a replica's (a fixed list of five dropped
    # `X-Request-Id`: the twentieth review)
    headers = forward.forwarded_headers(answer.headers, {})  # (read by aiohttp: values as they were sent)
    response = web.StreamResponse(status=answer.status, headers=headers)
    events = response.content_type == "text/event-stream"
    held = b""  # an event's start not yet whole
    numbers = numbers_for(request.path)
    try:
        await response.prepare(request)
        async for chunk in answer.content.iter_any():
            if events:  # whole events only, as the direct path sends them: none cut in half by a failure
                chunk, held = whole_events(held, chunk)
                if numbers is not None:
                    numbers.sent(chunk)
            if chunk:
                await response.write(chunk)
        if held:
            await response.write(held)
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        log.warning(
            "worker %d failed mid-answer to %s %s: %s", owner, request.method, path_qs, type(e).__name__
        )
        if response.prepared and events:
            number = numbers.next() if numbers is not None else None
            with contextlib.suppress(ConnectionError, RuntimeError):
                await response.write(mid_answer_event(request.path, sequence_number=number))
        response.force_close()
    finally:
        answer.release()
    return response


def _other_owner(request: web.Request, response_id: str) -> int:
    """The other worker that served `response_id` (the workers' shared table), else -1: with one process, for
    an id the table does not hold, and when another worker is the one asking."""
    app = request.app
    workers, owners = app[WORKERS], app[RESPONSE_OWNERS]
    if workers is None or owners is None or between_workers(request):
        return -1
    owner = owners.owner(response_id)
    return owner if 0 <= owner < workers.count and owner != workers.index else -1


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/responses/{response_id}", stored_response)
    app.router.add_post("/v1/responses/{response_id}/cancel", stored_response)
