"""loadtests/bench/live.py: waiting for SAGA to subscribe to the replicas' KV events fails with the reason
when `/saga/v1/replicas` answers something other than its rows, instead of a traceback from deep inside."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from loadtests.bench.live import RouterFailed, _subscribed
from tests.proxy.fakes import serving


def _replicas_answering(answer: web.Response) -> web.Application:
    async def replicas(_: web.Request) -> web.Response:
        return answer

    app = web.Application()
    app.router.add_get("/saga/v1/replicas", replicas)
    return app


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (web.Response(text="not json", content_type="application/json"), "JSONDecodeError"),
        (web.json_response({"rows": []}), "KeyError"),
        (web.json_response({"replicas": [1, 2]}), "AttributeError"),
        (web.json_response({"error": "down"}, status=503), "503"),
        (web.Response(text="[" * 100_000 + "]" * 100_000, content_type="application/json"), "RecursionError"),
    ],
)
async def test_a_malformed_replicas_answer_fails_the_router_with_its_reason(
    answer: web.Response, reason: str
) -> None:
    async with serving(_replicas_answering(answer)) as url, aiohttp.ClientSession() as http:
        with pytest.raises(RouterFailed, match=reason):
            await _subscribed(http, url)


async def test_it_returns_once_every_replica_has_ranks() -> None:
    rows = [{"url": "a", "kv_events": {"ranks": [0]}}, {"url": "b", "kv_events": {"ranks": [0, 1]}}]
    answer = web.json_response({"replicas": rows})
    async with serving(_replicas_answering(answer)) as url, aiohttp.ClientSession() as http:
        await _subscribed(http, url)
