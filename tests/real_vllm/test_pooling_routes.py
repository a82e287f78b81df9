"""A chat model and an embedding model behind one SAGA URL, on two real vLLM servers (CPU build, the tiny
model served as is and converted to an embedding model): the pooling routes, `/tokenize` and the calls each
reach the replica serving the model they name, and what comes back is what that replica answers directly."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from proxy.config import ProxyConfig
from proxy.server import running_proxy
from tests.real_vllm.real_vllm import Server, running_vllms

CHAT, EMBED = "tiny-chat", "tiny-embed"


@pytest.fixture(scope="module")
def replicas() -> Iterator[tuple[str, str]]:
    with running_vllms(
        Server(["--served-model-name", CHAT], name="pooling-chat"),
        Server(
            ["--served-model-name", EMBED, "--runner", "pooling", "--convert", "embed"], name="pooling-embed"
        ),
    ) as (chat, embed):
        yield chat, embed


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, Any, str | None]:
    async with http.post(url, json=body) as r:
        return r.status, await r.json(), r.headers.get("X-Saga-Replica")


async def test_each_route_reaches_the_replica_serving_its_model(
    replicas: tuple[str, str], http: aiohttp.ClientSession
) -> None:
    chat, embed = replicas
    texts = ["def add(a, b): return a + b", "class Stack: pass"]
    status, direct, _ = await post(http, f"{embed}/v1/embeddings", {"model": EMBED, "input": texts})
    assert status == 200, direct
    config = ProxyConfig(replicas=[chat, embed], port=0, health_interval_s=0.2, access_log=False)
    async with running_proxy(config) as url:
        for _ in range(200):  # the health loop reads each replica's model list
            async with http.get(f"{url}/saga/v1/replicas") as r:
                if all(v["models"] for v in (await r.json())["replicas"]):
                    break
            await asyncio.sleep(0.05)
        for _ in range(3):  # in turn, every other request of each would reach the wrong replica's 404
            status, embedded, replica = await post(
                http, f"{url}/v1/embeddings", {"model": EMBED, "input": texts}
            )
            assert (status, replica) == (200, embed), embedded
            for got, want in zip(embedded["data"], direct["data"], strict=True):
                pairs = zip(got["embedding"], want["embedding"], strict=True)
                assert all(math.isclose(a, b, abs_tol=1e-5) for a, b in pairs)
            rerank = {"model": EMBED, "query": "add numbers", "documents": texts}
            status, ranked, replica = await post(http, f"{url}/v1/rerank", rerank)
            assert (status, replica) == (200, embed), ranked
            assert sorted(r["index"] for r in ranked["results"]) == [0, 1]
            for model, home in ((CHAT, chat), (EMBED, embed)):
                status, tokens, replica = await post(
                    http, f"{url}/tokenize", {"model": model, "prompt": texts[0]}
                )
                assert (status, replica) == (200, home), tokens
                assert tokens["count"] > 0
            body = {"model": CHAT, "messages": [{"role": "user", "content": texts[0]}], "max_tokens": 3}
            status, answer, replica = await post(http, f"{url}/v1/chat/completions", body)
            assert (status, replica) == (200, chat), answer
        async with http.get(f"{url}/metrics") as r:
            metrics = await r.text()
    assert 'saga_calls_total{route="/v1/embeddings",status="200"} 3.0' in metrics
