"""End-to-end over loopback: browser clients (CORS), as vLLM's server answers them. A preflight (`OPTIONS`)
to a call route was a 405 on both servers, so a web client that works against vLLM (every origin allowed by
default) could not call through SAGA (the forty-seventh session's review)."""

from __future__ import annotations

import aiohttp
import pytest

from proxy.config import ProxyConfig
from proxy.scheduler import ConfigError
from proxy.server import running_proxy
from tests.proxy.fakes import config, fake_replica

SERVERS = pytest.mark.parametrize("server", ["fast", "aiohttp"])
PREFLIGHT = {
    "Origin": "https://app.example.com",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
}
BODY = {"model": "fake", "messages": [{"role": "user", "content": "go"}]}


@SERVERS
async def test_a_preflight_is_answered_before_authentication(server: str) -> None:
    async with (
        fake_replica() as replica,
        running_proxy(config([replica.url], server=server, api_keys={"sk-1": "team"})) as url,
        aiohttp.ClientSession() as http,
    ):
        for path in ("/v1/chat/completions", "/v1/messages", "/v1/models"):
            async with http.options(f"{url}{path}", headers=PREFLIGHT) as r:
                got = (r.status, dict(r.headers))
            assert got[0] == 200, got
            assert got[1]["Access-Control-Allow-Origin"] == "*"
            assert "POST" in got[1]["Access-Control-Allow-Methods"]
            assert got[1]["Access-Control-Allow-Headers"] == PREFLIGHT["Access-Control-Request-Headers"]
        # the proxy's own refusal (no key) is readable by the page: it names the origin allowed
        async with http.post(f"{url}/v1/chat/completions", json=BODY, headers={"Origin": "https://a.b"}) as r:
            assert r.status == 401 and r.headers.get("Access-Control-Allow-Origin") == "*"
        async with http.get(f"{url}/v1/models", headers={"Origin": "https://a.b", "x-api-key": "sk-1"}) as r:
            assert r.status == 200 and r.headers.get("Access-Control-Allow-Origin") == "*"


@SERVERS
async def test_origins_not_listed_are_refused_and_none_listed_turns_it_off(server: str) -> None:
    listed = config([], server=server, cors_allowed_origins="https://app.example.com")
    async with fake_replica() as replica, aiohttp.ClientSession() as http:
        proxy = ProxyConfig(**{**_fields(listed), "replicas": [replica.url]})
        async with running_proxy(proxy) as url:
            async with http.options(f"{url}/v1/chat/completions", headers=PREFLIGHT) as r:
                allowed = (r.status, r.headers.get("Access-Control-Allow-Origin"), r.headers.get("Vary"))
            other = {**PREFLIGHT, "Origin": "https://evil.example.com"}
            async with http.options(f"{url}/v1/chat/completions", headers=other) as r:
                refused = (r.status, r.headers.get("Access-Control-Allow-Origin"), (await r.json())["error"])
        assert allowed == (200, "https://app.example.com", "Origin")
        assert refused[:2] == (400, None) and refused[2]["code"] == "cors_origin", refused
        off = ProxyConfig(**{**_fields(listed), "replicas": [replica.url], "cors_allowed_origins": ""})
        async with (
            running_proxy(off) as url,
            http.options(f"{url}/v1/chat/completions", headers=PREFLIGHT) as r,
        ):
            assert r.status == 405 and "Access-Control-Allow-Origin" not in r.headers


def _fields(config: ProxyConfig) -> dict[str, object]:
    return {name: getattr(config, name) for name in config.__struct_fields__}


@pytest.mark.parametrize("value", ["app.example.com", "https://a.b, x", "https://a b"])
def test_a_malformed_origin_is_refused_at_start(value: str) -> None:
    with pytest.raises(ConfigError, match="cors_allowed_origins"):
        ProxyConfig(replicas=["http://127.0.0.1:9"], cors_allowed_origins=value).validate()
