"""SAGA before two real vLLM replicas (CPU build, tiny model) with saga-vllm-plugin: session affinity, the
retention directive (`vllm_xargs.saga_retain_ttl_s`, `saga_retain_priority`) and the client's `priority` all
arrive at the engines, end to end over loopback. The proxy is the one `saga serve` runs (`running_proxy`)."""

from __future__ import annotations

import random
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from proxy.config import ProxyConfig
from proxy.scheduler import PRESETS
from proxy.scheduler.registry import PluginSpec
from proxy.server import running_proxy
from tests.real_vllm.plugin import PLUGIN_ENV, plugin_server_args, require_plugin
from tests.real_vllm.real_vllm import Server, running_vllms

BLOCK = 128


def tokens(seed: int, n: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(3, 259) for _ in range(n)]


@pytest.fixture(scope="module")
def replicas() -> Iterator[list[str]]:
    require_plugin()
    args = plugin_server_args(40)
    with running_vllms(Server(args, PLUGIN_ENV, "e2e-0"), Server(args, PLUGIN_ENV, "e2e-1")) as urls:
        yield list(urls)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


async def complete(
    http: aiohttp.ClientSession, proxy: str, session: str, prompt: list[int], priority: int
) -> tuple[int, str]:
    """One call through the proxy; (cached prompt tokens, the replica that served it)."""
    body = {"prompt": prompt, "max_tokens": 4, "ignore_eos": True, "priority": priority}
    async with http.post(f"{proxy}/v1/completions", json=body, headers={"X-Session-ID": session}) as r:
        out = await r.json()
        assert r.status == 200, out
        return int(out["usage"]["prompt_tokens_details"]["cached_tokens"]), r.headers["X-Saga-Replica"]


async def retained(http: aiohttp.ClientSession, replica: str) -> dict[str, Any]:
    async with http.get(f"{replica}/saga/v1/retained") as r:
        assert r.status == 200
        listing = await r.json()
    return {s["session_id"]: s for s in listing["sessions"]}


async def run_sessions(
    http: aiohttp.ClientSession, proxy: str, priorities: dict[str, int]
) -> dict[str, tuple[str, list[int]]]:
    """Three growing calls per session; each session's replica and cached tokens per call."""
    seen: dict[str, tuple[str, list[int]]] = {}
    for session, priority in priorities.items():
        prompt = tokens(zlib.crc32(session.encode()), 600)
        homes, cached = set(), []
        for turn in range(3):
            hit, replica = await complete(http, proxy, session, prompt, priority)
            homes.add(replica)
            cached.append(hit)
            prompt = prompt + tokens(turn, 300)
        assert len(homes) == 1, f"session {session} moved: {homes}"
        seen[session] = (homes.pop(), cached)
    return seen


async def test_continuum_ttl_keeps_sessions_home_and_retains_their_kv_at_the_clients_priority(
    replicas: list[str], http: aiohttp.ClientSession
) -> None:
    config = ProxyConfig(replicas=replicas, policy="continuum-ttl", port=0, seed=1, health_interval_s=0.5)
    async with running_proxy(config) as proxy:
        seen = await run_sessions(http, proxy, {"alpha": 2, "beta": 0, "gamma": 1})
    assert {home for home, _ in seen.values()} == set(replicas)  # new sessions spread over both
    for session, (home, cached) in seen.items():
        assert cached[1] >= 600 // BLOCK * BLOCK and cached[2] >= 900 // BLOCK * BLOCK  # the prefix stayed
        here = await retained(http, home)
        assert session in here, (session, home, here)
        info = here[session]
        # the directive arrived (continuum-ttl: 10 s), at the client's own priority (the retention default)
        assert (
            0 < info["ttl_left_s"] <= 10.0
            and info["priority"] == {"alpha": 2, "beta": 0, "gamma": 1}[session]
        )
        other = next(r for r in replicas if r != home)
        assert session not in await retained(http, other)


async def test_a_policys_retention_priority_reaches_the_engine(
    replicas: list[str], http: aiohttp.ClientSession
) -> None:
    retention = PluginSpec("fixed-ttl-retention", params={"ttl_s": 60.0, "priority": -4})
    policy = PRESETS["continuum-ttl"].__class__(
        picker=PRESETS["continuum-ttl"].picker, scorers=PRESETS["continuum-ttl"].scorers, retention=retention
    )
    config = ProxyConfig(replicas=replicas, policy=policy, port=0, seed=1, health_interval_s=0.5)
    async with running_proxy(config) as proxy:
        seen = await run_sessions(http, proxy, {"delta": 3})
    home, _ = seen["delta"]
    info = (await retained(http, home))["delta"]
    assert info["priority"] == -4 and 50.0 < info["ttl_left_s"] <= 60.0


@pytest.mark.parametrize("priority", ["Infinity", "1e300", "1.5"])
async def test_a_bad_retention_priority_on_the_responses_api_is_a_400_and_the_engine_lives(
    replicas: list[str], http: aiohttp.ClientSession, priority: str
) -> None:
    """`/v1/responses` takes `vllm_xargs` too: a non-finite priority sent there reached the engine thread,
    whose `int(inf)` stopped vLLM; one past 64 bits hung it. The plugin answers 400 before vLLM sees it."""
    replica = replicas[0]
    body = (
        '{"model": "%s", "input": "hello", "max_output_tokens": 4, "session_id": "bad-priority",'
        ' "vllm_xargs": {"saga_retain_ttl_s": 5, "saga_retain_priority": %s}}'
    )
    async with http.get(f"{replica}/v1/models") as r:
        model = (await r.json())["data"][0]["id"]
    headers = {"Content-Type": "application/json"}
    async with http.post(f"{replica}/v1/responses", data=body % (model, priority), headers=headers) as r:
        refused = (r.status, await r.json())
    assert refused[0] == 400 and "saga_retain_priority" in refused[1]["error"]["message"], refused
    after = {"prompt": tokens(7, 8), "max_tokens": 2}
    async with http.post(f"{replica}/v1/completions", json=after) as r:
        assert r.status == 200  # the engine still serves
    async with http.get(f"{replica}/saga/v1/retained") as r:
        assert r.status == 200
