"""Routes relayed to one healthy replica without scheduling: vLLM's pooling routes (embeddings, scoring,
reranking, classification), audio transcription and translation, `/tokenize`, `/detokenize`, the prompt
renderers and Anthropic's `/v1/messages/count_tokens`.

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
import re
from collections.abc import Iterator

import msgspec
from aiohttp import web

from proxy import forward
from proxy.context import CONFIG, CORE, METRICS, MODELS, POOL
from proxy.errors import ProxyError
from proxy.model_routing import for_model

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
)
BUSY = web.AppKey("passthrough_busy", dict[str, int])  # replica id -> passthrough requests in flight
_turn = itertools.count()


class _Model(msgspec.Struct):
    model: str | None = None


_model_decoder = msgspec.json.Decoder(_Model)
# A multipart form's `model` field: its part headers (Content-Disposition first), a blank line, the value.
_FORM_MODEL = re.compile(rb'name="model"\r\n(?:[^\r\n]+\r\n)*\r\n([^\r\n]{1,256})\r\n')


def model_of(body: bytes, content_type: str) -> str | None:
    """The model a passthrough body names, or None (no model, a body that is not what it claims: the replica
    answers that one itself)."""
    if content_type == "multipart/form-data":
        match = _FORM_MODEL.search(body)
        return match.group(1).decode("utf-8", "replace") if match else None
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


def add_routes(app: web.Application) -> None:
    app[BUSY] = {}
    for path in PASSTHROUGH_ROUTES:
        app.router.add_post(path, passthrough)
