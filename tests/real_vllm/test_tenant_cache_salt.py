"""With client API keys, each tenant's prefix cache on a real, stock vLLM (CPU build, tiny model) is its own:
the proxy sends each key's tenant's calls with a `cache_salt` of its own (proxy/tenant_salt.py), so a tenant
sending another's prompt finds none of it cached, where vLLM without the salt tells it how much it found (the
thirteenth review's side channel). Switched off (`tenant_cache_salt: false`), the cache is shared again."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from proxy.config import ProxyConfig
from proxy.server import running_proxy
from tests.real_vllm.real_vllm import running_vllm

KEYS = {"key-a": "alpha", "key-b": "beta"}


@pytest.fixture(scope="module")
def replica() -> Iterator[str]:
    with running_vllm(name="salt") as url:
        yield url


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


@pytest.mark.parametrize("salted", [True, False])
async def test_a_tenant_finds_none_of_another_tenants_prompt_cached(
    replica: str, http: aiohttp.ClientSession, salted: bool
) -> None:
    async with http.get(f"{replica}/v1/models") as r:
        model = (await r.json())["data"][0]["id"]
    # a prompt of its own per run (the module's server keeps its cache between the two)
    secret = f"alpha's private plan ({salted}): " + "acquire the rival company quietly. " * 30
    config = ProxyConfig(
        replicas=[replica], port=0, access_log=False, api_keys=KEYS, tenant_cache_salt=salted
    )
    cached = {}
    async with running_proxy(config) as url:
        for name, key in (("alpha", "key-a"), ("alpha again", "key-a"), ("beta", "key-b")):
            body = {"model": model, "messages": [{"role": "user", "content": secret}], "max_tokens": 1}
            headers = {"Authorization": f"Bearer {key}"}
            async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
                assert r.status == 200, await r.text()
                cached[name] = (await r.json())["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached["alpha"] == 0 and cached["alpha again"] > 100, cached  # a tenant's own prefix is cached
    assert (cached["beta"] == 0) is salted, cached
