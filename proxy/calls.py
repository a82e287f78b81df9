"""The LLM-call routes: parse just enough, identify, describe the call to the core, then hand it to `Call`.

Contract:
- `serve_call` (a coroutine, any `forward.Downstream`: the aiohttp handler `proxy_call` and the fast server's
  task path) and `begin_call` (the fast server's common path, proxy/fast_server.py) serve one call to a
  `CALL_ROUTES` path with the same behaviour; proxy/call.py says how a call goes on from here and
  proxy/call_attempts.py how it is retried and accounted for.
- A body that is not a JSON object of the expected shape, and identity values that break proxy/identity.py's
  rules, are OpenAI-style 400s (`ProxyError`) raised before the core hears of the call: nothing to release.
- A streamed chat/completions call that did not ask for usage asks upstream for it (`stream_options`), and
  the usage event is stripped from what the client gets.
- A client's own KV retention directives (`vllm_xargs.saga_retain_*`, docs/retention-api.md) are dropped:
  only the scheduler asks replicas for retention.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping

import msgspec
from aiohttp import web
from multidict import CIMultiDict

from proxy import forward
from proxy.auth import TENANT
from proxy.call import Call, CallShared
from proxy.context import CHAINS, CONFIG, TENANT_SOURCES
from proxy.data_structs import CallFields, Identity, SeenMessages, StreamOptions
from proxy.directives import asks_for_retention, lacks_of, with_session_id, without_client_retention
from proxy.errors import ProxyError
from proxy.identity import IdentityError, check_id, decode_call, identify, scheduled_session_id
from proxy.inline_relay import InlineDownstream
from proxy.json_problems import json_problem
from proxy.prompt_shape import choice_count, estimated_tokens, output_cap, prefix_hashes
from proxy.response_lookup import LOOKUP_STATE, LookupState, find_holder, needs_lookup
from proxy.scheduler import RequestInfo
from proxy.tenant_salt import salted

CALL_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages")
# the routes with stream options (the Responses API always reports) and `n` choices
USAGE_OPTION_ROUTES = frozenset({"/v1/chat/completions", "/v1/completions"})
_request_ids = itertools.count()
_id_prefix = f"saga-{os.getpid():x}"
SHARED = web.AppKey("call_shared", CallShared)


def _bad_request(message: str, code: str = "invalid_request_body") -> ProxyError:
    return ProxyError(400, message, code=code)


# A UTF-8 byte order mark before a JSON body (some Windows tools write one): vLLM reads past it, so the
# proxy does too, and forwards the body without it.
_BOM = b"\xef\xbb\xbf"


def without_bom(body: bytes) -> bytes:
    return body[3:] if body.startswith(_BOM) else body


def parse_call(body: bytes) -> CallFields:
    """The body's fields (a BOM before it skipped); ProxyError 400 for a body that is not a call."""
    return _parsed(without_bom(body))


def _parsed(body: bytes) -> CallFields:
    if not body:
        raise _bad_request("request body is empty; expected a JSON object")
    try:
        fields = decode_call(body)
    except msgspec.ValidationError as e:
        raise _bad_request(f"invalid request body: {e}") from e
    except msgspec.DecodeError as bad:  # one name per exception type: mypyc types it once
        raise _bad_request(f"request body is not valid JSON: {json_problem(body, bad)}") from bad
    previous = fields.previous_response_id
    if previous:  # before anything looks it up (a replica asked for it, another worker's table), or quotes it
        try:
            check_id("previous_response_id", previous)
        except IdentityError as e:
            raise ProxyError(400, e.message, param=e.param, code="invalid_identity") from e
    return fields


async def proxy_call(request: web.Request) -> web.StreamResponse:
    """The aiohttp handler of the call routes."""
    downstream = forward.AiohttpDownstream(request)
    headers = CIMultiDict(forward.client_header_pairs(request))  # passed on as sent, as the fast server does
    await serve_call(
        request.app, request.path, headers, await request.read(), request.get(TENANT), downstream
    )
    assert downstream.response is not None
    return downstream.response


async def serve_call(
    app: web.Application,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    tenant: str | None,
    downstream: forward.Downstream,
) -> None:
    """One call, whichever server holds the client connection: the answer goes to `downstream`.

    `headers` must be case-insensitive; `tenant` is the tenant a client API key named (None without keys).
    Raises ProxyError for the proxy's own refusals; the server answers it (nothing was sent yet then)."""
    body = without_bom(body)
    await _served_after_lookup(app, path, headers, body, tenant, downstream, _parsed(body))


async def _served_after_lookup(
    app: web.Application,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    tenant: str | None,
    downstream: forward.Downstream | InlineDownstream,
    fields: CallFields,
    seen: SeenMessages | None = None,
    pairs: list[tuple[str, str]] | None = None,
) -> None:
    """The call, once the replica that stored the response it continues is known: a response this proxy
    has no record of is asked of the replicas (proxy/response_lookup.py), so the call is pinned there."""
    chains, previous = app[CHAINS], fields.previous_response_id
    if previous and needs_lookup(app, fields, chains):
        holder = await find_holder(app, previous)
        if holder:
            chains.remember_response(previous, "", holder)
    call = _prepared(app, path, headers, body, tenant, downstream, fields, seen)
    if pairs is not None:
        call.forwarded_from = pairs
    await call.run()


def _nothing() -> None:
    pass


def begin_call(
    app: web.Application,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    tenant: str | None,
    downstream: InlineDownstream,
    pairs: list[tuple[str, str]] | None = None,
    fields: CallFields | None = None,
    seen: SeenMessages | None = None,
) -> None:
    """`serve_call` without a coroutine where it can: the call is under way in callbacks (it ends with
    `downstream.done()`), or its rest is handed over to a task (`downstream.hand_over`, raising ProxyError
    there as `serve_call` does). Raises ProxyError for a refusal. `pairs`: the header lines `headers` was
    made of, in order (what is forwarded is read from them: cheaper than walking a CIMultiDict). `fields`
    and `seen`: the body's fields and messages when the caller read them (proxy/identity.py's
    `ownership_key`), so they are not decoded again."""
    body = without_bom(body)
    if fields is None:
        fields = _parsed(body)
    # (the cheap test first: most calls name no previous response, and needs_lookup is a Python-level call)
    if fields.previous_response_id and needs_lookup(app, fields, app[CHAINS]):
        work = _served_after_lookup(app, path, headers, body, tenant, downstream, fields, seen, pairs)
        downstream.hand_over(work, _nothing)
        return
    call = _prepared(app, path, headers, body, tenant, downstream, fields, seen)
    if pairs is not None:
        call.forwarded_from = pairs
    call.begin(downstream)


def _keyed(who: Identity, tenant: str) -> Identity:
    """The identity of a call authenticated by a client API key: the key's tenant, and sessions and agent
    types of its own. Another key naming the same session id has another session, so it cannot ride on this
    tenant's admitted workflows, end them (`X-Session-End`) or mix its calls into their predictions; naming
    the same agent type (`X-Agent-Type: coder`), it learns a graph of its own (`beta:coder`), so it cannot
    teach this tenant's admission and holds (a type whose workflows seem never to come back stops holding
    KV between calls; one whose contexts seem to grow reserves more). A session inferred (from the
    conversation's opening or chain, or from `previous_response_id`) is not prefixed: `identify`, given the
    tenant as `scope`, finds only the tenant's own (the opening and chain hashes include it, a response
    recorded under another tenant is not found), and a new one's id is made here."""
    session = scheduled_session_id(who.session_id, who.session_inferred, tenant)
    prefix = tenant + ":"
    shown = session[len(prefix) :] if session.startswith(prefix) else None
    agent_type = who.agent_type
    if not agent_type.startswith(prefix):  # (a live session's type, looked up, is the tenant's already)
        agent_type = prefix + agent_type
    return msgspec.structs.replace(
        who, tenant_id=tenant, session_id=session, shown_session_id=shown, agent_type=agent_type
    )


def _prepared(
    app: web.Application,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    tenant: str | None,
    downstream: forward.Downstream | InlineDownstream,
    fields: CallFields | None = None,
    seen: SeenMessages | None = None,
) -> Call:
    shared = app[SHARED]
    if not shared.ready:  # the first call, after startup (the upstream pool is made at startup)
        shared.resolve()
    core = shared.core
    if fields is None:
        fields = _parsed(body)  # (the callers skipped a BOM)
    xargs = fields.vllm_xargs
    if isinstance(xargs, dict) and asks_for_retention(xargs):  # rare: only the scheduler asks for retention
        body = without_client_retention(body)
    previous = fields.previous_response_id
    if tenant is not None and previous and shared.chains.foreign_response(previous, tenant):
        # another tenant's response: its replica would continue that conversation for this caller
        raise ProxyError(
            404, f"Response with id '{previous}' not found.", param="previous_response_id", code="not_found"
        )
    request_id = f"{_id_prefix}-{next(_request_ids)}"
    try:
        who = identify(
            headers,
            fields,
            request_id,
            shared.tenant_sources,
            chains=shared.chains,
            seen=seen,
            scope=tenant,
            agent_type_of=core.predictor.agent_type_of,
            session_live=core.first_call_pending,
            key_conversations=shared.key_conversations,
            session_known=core.holds_session,
            session_busy=core.call_in_flight,
        )
    except IdentityError as e:
        raise ProxyError(400, e.message, param=e.param, code="invalid_identity") from e
    salts, prefix_seed = shared.salts, 0
    if tenant is not None:  # authenticated by a client API key: the key names the tenant
        who = _keyed(who, tenant)
        if salts is not None:  # its prefix cache its own (proxy/tenant_salt.py)
            body = salted(body, fields.cache_salt, tenant, salts)
            prefix_seed = salts.prefix_seed(tenant)
    if fields.session_id and fields.session_id != who.session_id:
        body = with_session_id(body, who.session_id)  # vLLM reads the body's before the header's
    kv = shared.kv_residency
    # a view into the body, hashed in place
    prompt: bytes | msgspec.Raw = fields.messages or fields.prompt or fields.input
    if fields.system:  # /v1/messages (Anthropic): the system prompt comes first, outside the messages
        prompt = bytes(fields.system) + bytes(prompt)
    # `n`: vLLM's parallel sampling, on the two routes that have it (vLLM ignores it on the others)
    choices = choice_count(fields.n) if path in USAGE_OPTION_ROUTES else 1
    info = RequestInfo(
        request_id=request_id,
        session_id=who.session_id,
        arrived_at=core.clock(),
        tenant_id=who.tenant_id,
        agent_type=who.agent_type,
        model=fields.model or "",
        prompt_chars=len(prompt),
        prompt_tokens=int(estimated_tokens(prompt) * core.prompt_scale),  # (the engines' counts' scale)
        prefix_hashes=prefix_hashes(prompt, prefix_seed) if core.policy.wants_prefix_hashes else (),
        stream=fields.stream is True,
        session_inferred=who.session_inferred,
        # a Responses API continuation: vLLM keeps stored responses in its own memory, so only the replica
        # that answered the previous one can serve it
        pinned_replica=(
            shared.chains.replica_of_response(fields.previous_response_id)
            if fields.previous_response_id
            else ""
        ),
        kv_resident=None if kv is None else kv.resident_estimated(who.session_id),
        max_output_tokens=choices
        * output_cap(fields.max_tokens, fields.max_completion_tokens, fields.max_output_tokens),
        choices=choices,
    )
    options = fields.stream_options
    add_usage = (
        fields.stream is True
        and path in USAGE_OPTION_ROUTES
        and not (isinstance(options, StreamOptions) and options.include_usage)
    )
    # members the body lacks are added to it without decoding it again (proxy/directives.py)
    lacks = lacks_of(fields)
    return Call(app, shared, path, headers, downstream, info, who, body, add_usage, lacks)


def add_routes(app: web.Application) -> None:
    app[TENANT_SOURCES] = app[CONFIG].tenants.header_sources()
    app[SHARED] = CallShared(app)
    app[LOOKUP_STATE] = LookupState()
    for path in CALL_ROUTES:
        app.router.add_post(path, proxy_call)
