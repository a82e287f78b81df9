"""End-to-end over loopback: browser clients (CORS) under the proxy's own policy, `cors_allowed_origins`. A
preflight (`OPTIONS`) to a call route was a 405 on both servers, so a web client that works against vLLM
(every origin allowed by default) could not call through SAGA (the forty-seventh session's second review);
with CORS turned on, the replicas' own fields overrode the proxy's list and the admin API was open to any web
page (its fourth)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.config import ProxyConfig
from proxy.scheduler import ConfigError
from proxy.server import running_proxy
from tests.proxy.fakes import OK_JSON, SSE_EVENT, config, replica_app, serving

SERVERS = pytest.mark.parametrize("server", ["fast", "aiohttp"])
APP = "https://app.example.com"
PREFLIGHT = {
    "Origin": APP,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
}
BODY = {"model": "fake", "messages": [{"role": "user", "content": "go"}]}


async def every_origin(request: web.Request) -> web.StreamResponse:
    """A replica allowing every origin, as vLLM does by default; streams when asked."""
    cors = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Credentials": "true"}
    if (await request.json()).get("stream"):
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **cors})
        await response.prepare(request)
        await response.write(SSE_EVENT + b"data: [DONE]\n\n")
        return response
    return web.Response(body=OK_JSON, content_type="application/json", headers=cors)


@pytest.fixture
async def replica() -> AsyncIterator[str]:
    async with serving(replica_app(every_origin)) as url:
        yield url


async def answered(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with http.request(method, url, **kwargs) as r:
        await r.read()
        return r.status, r.headers


@SERVERS
async def test_a_preflight_is_answered_before_authentication_and_every_answer_names_the_origin(
    replica: str, server: str
) -> None:
    proxy = config([replica], server=server, api_keys={"sk-1": "team"}, cors_allowed_origins="*")
    async with running_proxy(proxy) as url, aiohttp.ClientSession() as http:
        for path in ("/v1/chat/completions", "/v1/messages", "/v1/models"):
            status, headers = await answered(http, "OPTIONS", f"{url}{path}", headers=PREFLIGHT)
            assert status == 200 and headers["Access-Control-Allow-Origin"] == "*", (path, headers)
            assert "POST" in headers["Access-Control-Allow-Methods"]
            assert headers["Access-Control-Allow-Headers"] == PREFLIGHT["Access-Control-Request-Headers"]
        keyed = {"Origin": APP, "Authorization": "Bearer sk-1"}
        for body in (BODY, {**BODY, "stream": True}):  # relayed, whole and streamed: the proxy's one field
            status, headers = await answered(
                http, "POST", f"{url}/v1/chat/completions", json=body, headers=keyed
            )
            assert status == 200 and headers.getall("Access-Control-Allow-Origin") == ["*"], headers
            assert "Access-Control-Allow-Credentials" not in headers
            # the page may read the proxy's own fields (the fifth review: none was exposed)
            exposed = headers.get("Access-Control-Expose-Headers", "")
            assert "X-Session-ID" in exposed and "Retry-After" in exposed, headers
        # the proxy's own refusals are readable by the page: no key, a body over the limit
        status, headers = await answered(
            http, "POST", f"{url}/v1/chat/completions", json=BODY, headers={"Origin": APP}
        )
        assert status == 401 and headers.get("Access-Control-Allow-Origin") == "*"
        big = b"{" + b" " * (proxy.max_body_bytes + 10) + b"}"
        status, headers = await answered(http, "POST", f"{url}/v1/chat/completions", data=big, headers=keyed)
        assert status == 413 and headers.get("Access-Control-Allow-Origin") == "*"


@SERVERS
async def test_the_admin_api_is_never_open_to_web_pages(replica: str, server: str) -> None:
    async with (
        running_proxy(config([replica], server=server, cors_allowed_origins="*")) as url,
        aiohttp.ClientSession() as http,
    ):
        preflight = {**PREFLIGHT, "Origin": "https://evil.example.com"}
        status, headers = await answered(http, "OPTIONS", f"{url}/saga/v1/replicas", headers=preflight)
        assert status == 405 and "Access-Control-Allow-Origin" not in headers
        for path in ("/saga/v1/replicas", "/saga/v1/sessions", "/saga/v1/state", "/metrics"):
            status, headers = await answered(http, "GET", f"{url}{path}", headers={"Origin": "https://e.com"})
            assert status == 200 and "Access-Control-Allow-Origin" not in headers, path


@SERVERS
async def test_the_proxys_list_decides_not_the_replicas(replica: str, server: str) -> None:
    listed = config([replica], server=server, cors_allowed_origins=APP)
    async with running_proxy(listed) as url, aiohttp.ClientSession() as http:
        status, headers = await answered(http, "OPTIONS", f"{url}/v1/chat/completions", headers=PREFLIGHT)
        assert (status, headers["Access-Control-Allow-Origin"], headers["Vary"]) == (200, APP, "Origin")
        evil = {**PREFLIGHT, "Origin": "https://evil.example.com"}
        async with http.options(f"{url}/v1/chat/completions", headers=evil) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "cors_origin"
            assert "Access-Control-Allow-Origin" not in r.headers
        for origin, allowed in ((APP, [APP]), ("https://evil.example.com", []), (None, [])):
            sent = {} if origin is None else {"Origin": origin}
            status, headers = await answered(
                http, "POST", f"{url}/v1/chat/completions", json=BODY, headers=sent
            )
            assert status == 200 and headers.getall("Access-Control-Allow-Origin", []) == allowed, origin
            assert headers.get("Vary") == "Origin", origin  # every answer, with a list (shared caches)
    off = ProxyConfig(**{**_fields(listed), "cors_allowed_origins": ""})  # the default
    async with running_proxy(off) as url, aiohttp.ClientSession() as http:
        status, headers = await answered(http, "OPTIONS", f"{url}/v1/chat/completions", headers=PREFLIGHT)
        assert status == 405 and "Access-Control-Allow-Origin" not in headers
        status, headers = await answered(
            http, "POST", f"{url}/v1/chat/completions", json=BODY, headers=PREFLIGHT
        )
        assert status == 200 and "Access-Control-Allow-Origin" not in headers  # (the replica's: not relayed)


def _fields(config: ProxyConfig) -> dict[str, object]:
    return {name: getattr(config, name) for name in config.__struct_fields__}


@pytest.mark.parametrize("value", ["app.example.com", "https://a.b, x", "https://a b"])
def test_a_malformed_origin_is_refused_at_start(value: str) -> None:
    with pytest.raises(ConfigError, match="cors_allowed_origins"):
        ProxyConfig(replicas=["http://127.0.0.1:9"], cors_allowed_origins=value).validate()


@SERVERS
async def test_a_web_page_cannot_change_the_admin_api(replica: str, server: str) -> None:
    """Without `admin_token`, a page's plain POST (`text/plain`: no preflight) added a replica or ended
    sessions; a browser sends `Origin` with it, which no tool does (the forty-seventh session's fourth
    review)."""
    async with running_proxy(config([replica], server=server)) as url, aiohttp.ClientSession() as http:
        page = {"Origin": "https://evil.example.com", "Content-Type": "text/plain"}
        body = '{"url": "http://127.0.0.1:9"}'
        async with http.post(f"{url}/saga/v1/replicas", data=body, headers=page) as r:
            refused = (r.status, (await r.json())["error"]["code"])
        async with http.post(
            f"{url}/saga/v1/replicas", data=body, headers={"Content-Type": "text/plain"}
        ) as r:
            tool = r.status
    assert refused == (403, "origin") and tool == 201
