"""Routes relayed to one healthy replica without scheduling: vLLM's pooling routes (embeddings, scoring,
reranking, classification), audio transcription and translation, `/tokenize`, `/detokenize`, the prompt
renderers and derenderers, token-in token-out generation (`/inference/v1/generate`), Anthropic's
`/v1/messages/count_tokens`, and `GET /version` and `/tokenizer_info`. Any other route is the proxy's 404:
vLLM's operator routes (LoRA loading, sleep, weight updates, cache resets, profiling) act on one server,
so an operator calls each replica; `/ping` is the proxy's `/health`.

They are not steps of an agent's workflow (no KV to keep, no session to place), so they make no core events
and no accounting, but they are balanced and follow the `model` they name: a fleet where some replicas serve
a chat model and others an embedding model (a coding agent's codebase index, a RAG step) is served through
one URL.

Contract: the body is forwarded byte for byte. The replica is chosen among the healthy ones (a draining
replica is not healthy) that list the body's `model` (a JSON body's `model`, or a multipart form's `model`
field; replicas whose models are not known yet stay candidates, a model no replica lists goes to any, and one
whose replicas are all down is a 503, as for calls: proxy/model_routing.py), the least busy first (this
proxy's passthrough requests in flight on it, plus the calls in flight and waiting there), ties taken in turn.
A replica that cannot be reached is skipped; with none left the client gets a 503. A whole answer is held to
`max_answer_bytes` like a call's. Each answer is counted in `saga_calls_total{route,status}`.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

import msgspec
from aiohttp import web

from proxy import forward
from proxy.auth import TENANT
from proxy.calls import without_bom
from proxy.context import CONFIG, CORE, METRICS, MODELS, POOL
from proxy.errors import ProxyError
from proxy.model_routing import for_model
from proxy.tenant_salt import TENANT_SALTS, TenantSalts, salted

POOLING_ROUTES = (
    "/v1/embeddings",
    "/v2/embed",
    "/pooling",
    "/classify",
    "/score",
    "/v1/score",
    "/rerank",
    "/v1/rerank",
    "/v2/rerank",
)
AUDIO_ROUTES = ("/v1/audio/transcriptions", "/v1/audio/translations")  # multipart forms
PASSTHROUGH_ROUTES = (
    *POOLING_ROUTES,
    *AUDIO_ROUTES,
    "/tokenize",
    "/detokenize",
    "/v1/chat/completions/render",
    "/v1/completions/render",
    "/v1/messages/render",
    "/v1/responses/render",
    "/v1/messages/count_tokens",  # Anthropic's token count, which Claude Code asks for
    "/v1/chat/completions/derender",
    "/v1/completions/derender",
    "/generative_scoring",
    # token-in token-out generation (RL frameworks): sent as it comes, outside the scheduler, like the rest
    "/inference/v1/generate",
)
PASSTHROUGH_GETS = ("/version", "/tokenizer_info")
# Routes that read a prefix cache and take vLLM's `cache_salt`: an API-key tenant's calls are salted as the
# scheduled calls are (proxy/tenant_salt.py)
SALTED_ROUTES = frozenset({"/inference/v1/generate"})


class _Salt(msgspec.Struct):
    cache_salt: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


_salt_decoder = msgspec.json.Decoder(_Salt)
BUSY = web.AppKey("passthrough_busy", dict[str, int])  # replica id -> passthrough requests in flight
_turn = itertools.count()


class _Model(msgspec.Struct):
    model: str | None = None


_model_decoder = msgspec.json.Decoder(_Model)
# A multipart form's `model` field: `name="model"` ending its Content-Disposition line, the part's other
# header lines (each non-empty, no stray CR or LF), a blank line, the value (1-256 bytes, no CR or LF), CRLF.
_FORM_MODEL_NAME = b'name="model"\r\n'
_LONGEST_MODEL = 256


def _form_model(body: bytes) -> bytes | None:
    """The value of the first well-formed `model` field, as the regex used before found it (a test checks
    they agree: tests/proxy/test_form_model.py), with `bytes.find` only: linear in the body. The regex
    backtracked over every later line at every `name="model"`: 25 s of the event loop for a crafted form of
    224 kB."""
    at = body.find(_FORM_MODEL_NAME)
    while at >= 0:
        lines_from = at + len(_FORM_MODEL_NAME)
        blank = body.find(b"\r\n\r\n", lines_from - 2)  # the first empty line: the part's headers end
        if blank < 0:
            return None
        value_end = body.find(b"\r\n", blank + 4, blank + 4 + _LONGEST_MODEL + 2)
        value = body[blank + 4 : value_end] if value_end > blank + 4 else b""
        if value and b"\r" not in value and b"\n" not in value:
            # a stray CR or LF in the header lines fails every `name="model"` before it in this part
            stray = body[lines_from : blank + 2].replace(b"\r\n", b"..")
            last_stray = max(stray.rfind(b"\r"), stray.rfind(b"\n"))
            if last_stray < 0:
                return value
            # one after the last stray, ending its line at the blank at the latest, has clean lines
            if body.find(_FORM_MODEL_NAME, lines_from + last_stray + 1, blank + 2) >= 0:
                return value
        at = body.find(_FORM_MODEL_NAME, blank + 2)  # those left in this part's headers share its value
    return None


def model_of(body: bytes, content_type: str) -> str | None:
    """The model a passthrough body names, or None (no model, a body that is not what it claims: the replica
    answers that one itself)."""
    if content_type == "multipart/form-data":
        value = _form_model(body)
        return None if value is None else value.decode("utf-8", "replace")
    try:
        return _model_decoder.decode(body).model
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None


def order_replicas(request: web.Request, model: str | None) -> list[str]:
    """The healthy replicas to try, in order (see the module's contract)."""
    app = request.app
    views = {r.replica_id: r for r in app[CORE].replicas.values() if r.healthy}
    healthy = list(views)
    if not healthy:
        return []
    candidates = for_model(app[MODELS], model, healthy, str)  # str: the items are the ids
    if not candidates:  # the replicas serving its model are all down
        return []
    start = next(_turn) % len(candidates)
    turn = [*candidates[start:], *candidates[:start]]
    busy = app[BUSY]
    # sorted() is stable: replicas equally busy keep the turn's order
    return sorted(turn, key=lambda r: busy.get(r, 0) + views[r].in_flight + views[r].waiting)


@contextlib.contextmanager
def _in_flight(busy: dict[str, int], replica: str) -> Iterator[None]:
    busy[replica] = busy.get(replica, 0) + 1
    try:
        yield
    finally:
        if busy[replica] > 1:
            busy[replica] -= 1
        else:
            del busy[replica]  # the table holds only the replicas with passthrough requests in flight


async def passthrough(request: web.Request) -> web.StreamResponse:
    app = request.app
    config = app[CONFIG]
    body = await request.read()
    salts, tenant = app.get(TENANT_SALTS), request.get(TENANT)
    if salts is not None and tenant is not None and request.path in SALTED_ROUTES:
        body = _salted_body(body, tenant, salts)
    model = model_of(body, request.content_type)
    replicas = order_replicas(request, model)
    if not replicas:
        why = "no healthy replica serves the model this request names" if model else "no healthy replica"
        raise ProxyError(503, why, code="no_replica")
    headers = forward.forwarded_headers(forward.client_header_pairs(request), {})
    forward.upstream_auth(headers, config)
    for replica in replicas:
        with _in_flight(app[BUSY], replica):
            try:
                upstream = await forward.open_upstream(
                    app[POOL],
                    replica + request.path,
                    body,
                    headers,
                    config.first_byte_timeout_s,
                    config.connect_timeout_s,
                    request.method,
                )
            except forward.UpstreamUnreachable:
                continue
            except forward.UpstreamTimeout as e:
                message = f"the replica did not answer in time: {e}"
                raise ProxyError(504, message, code="upstream_timeout") from e
            downstream = forward.AiohttpDownstream(request)
            await forward.relay(
                downstream,
                upstream,
                {"X-Saga-Replica": replica},
                lambda: None,
                config.stream_idle_timeout_s,
                max_answer_bytes=config.max_answer_bytes,
                path=request.path,
            )
        assert downstream.response is not None
        app[METRICS].calls.bump(request.path, str(downstream.response.status))  # what the client got
        return downstream.response
    raise ProxyError(503, "no replica could be reached", code="no_replica")


def _salted_body(body: bytes, tenant: str, salts: TenantSalts) -> bytes:
    """An API-key tenant's body for a salted route, salted; a 400 for one the salt cannot be put in, which
    the replica's parser might still take (a UTF-16 body: sent unsalted, it read the shared cache)."""
    body = without_bom(body)  # as on the call routes
    try:
        return salted(body, _salt_decoder.decode(body).cache_salt, tenant, salts)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as e:
        raise ProxyError(
            400, f"the request body must be a JSON object in UTF-8: {e}", code="invalid_request_body"
        ) from e


def add_routes(app: web.Application) -> None:
    app[BUSY] = {}
    for path in PASSTHROUGH_ROUTES:
        app.router.add_post(path, passthrough)
    for path in PASSTHROUGH_GETS:
        app.router.add_get(path, passthrough, allow_head=False)
