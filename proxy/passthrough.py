"""Routes relayed to any healthy replica without scheduling: `/tokenize`, `/detokenize`, vLLM's prompt
renderers (`/v1/chat/completions/render`, `/v1/completions/render`) and Anthropic's
`/v1/messages/count_tokens`.

They do no generation, so they are not calls of a session: no core events, no accounting. Contract: the body
is forwarded byte for byte to the next healthy replica in turn; a replica that cannot be reached is skipped;
with none left the client gets an OpenAI-style 503.
"""

from __future__ import annotations

import itertools

from aiohttp import web

from proxy import forward
from proxy.context import CONFIG, CORE, POOL
from proxy.errors import ProxyError

PASSTHROUGH_ROUTES = (
    "/tokenize",
    "/detokenize",
    "/v1/chat/completions/render",
    "/v1/completions/render",
    "/v1/messages/count_tokens",  # Anthropic's token count, which Claude Code asks for
)
_turn = itertools.count()


async def passthrough(request: web.Request) -> web.StreamResponse:
    app = request.app
    config = app[CONFIG]
    body = await request.read()
    healthy = [r.replica_id for r in app[CORE].replicas.values() if r.healthy]
    if not healthy:
        raise ProxyError(503, "no healthy replica", code="no_replica")
    start = next(_turn)
    headers = forward.forwarded_headers(request.headers, {})
    forward.upstream_auth(headers, config)
    for i in range(len(healthy)):
        replica = healthy[(start + i) % len(healthy)]
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
            raise ProxyError(504, f"the replica did not answer in time: {e}", code="upstream_timeout") from e
        downstream = forward.AiohttpDownstream(request)
        await forward.relay(
            downstream, upstream, {"X-Saga-Replica": replica}, lambda: None, config.stream_idle_timeout_s
        )
        assert downstream.response is not None
        return downstream.response
    raise ProxyError(503, "no replica could be reached", code="no_replica")


def add_routes(app: web.Application) -> None:
    for path in PASSTHROUGH_ROUTES:
        app.router.add_post(path, passthrough)
