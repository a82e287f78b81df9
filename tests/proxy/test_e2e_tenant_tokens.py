"""End-to-end over loopback: `/metrics` counts each tenant's tokens as the engines counted them
(`saga_tenant_prompt_tokens_total`, `saga_tenant_completion_tokens_total`,
`saga_tenant_cached_prompt_tokens_total`: proxy/tenant_metrics.py), equal to the usage its clients were
answered, streamed or not, in one process and summed over `saga serve --workers 2`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.server import running_proxy
from simulator.server import start_fleet
from tests.proxy.fakes import config
from tests.proxy.test_workers_e2e import saga_workers

SYSTEM = {"role": "system", "content": "You are the token-accounting test agent. " * 20}
KINDS = ("prompt", "completion", "cached_prompt")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # a connection per call: with several workers the kernel picks one for each
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


def _counts(usage: dict[str, Any]) -> dict[str, int]:
    details = usage.get("prompt_tokens_details") or {}
    return {
        "prompt": usage["prompt_tokens"],
        "completion": usage["completion_tokens"],
        "cached_prompt": details.get("cached_tokens") or 0,
    }


async def call(http: aiohttp.ClientSession, url: str, tenant: str, turn: int, stream: bool) -> dict[str, int]:
    """One chat call of `tenant`'s session; the usage its client was answered."""
    body: dict[str, Any] = {
        "model": "saga-sim",
        "messages": [SYSTEM, {"role": "user", "content": f"turn {turn} of {tenant}"}],
        "max_tokens": 5 + turn,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    headers = {"X-Tenant-ID": tenant, "X-Session-ID": f"{tenant}-{turn}"}
    async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
        assert r.status == 200, await r.text()
        if not stream:
            return _counts((await r.json())["usage"])
        usage = None
        async for line in r.content:
            if line.startswith(b"data: {"):
                event = json.loads(line[6:])
                usage = event.get("usage") or usage
        assert usage is not None
        return _counts(usage)


async def tenant_tokens(http: aiohttp.ClientSession, url: str) -> dict[tuple[str, str], float]:
    """{(tenant, kind): the counter's value} from `/metrics`."""
    async with http.get(f"{url}/metrics") as r:
        assert r.status == 200
        text = await r.text()
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for kind in KINDS:
            if family.name == f"saga_tenant_{kind}_tokens":
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        found[sample.labels["tenant"], kind] = sample.value
    return found


async def exercise(
    http: aiohttp.ClientSession, url: str
) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], float]]:
    """Calls of two tenants, whole and streamed, each turn twice (the second finds the first's prefix
    cached): the client-side sums and what `/metrics` says."""
    expected: dict[tuple[str, str], int] = {}
    for tenant, turns in (("alpha", 3), ("beta", 1)):
        for turn in range(turns):
            for stream in (False, True):
                for kind, value in (await call(http, url, tenant, turn, stream)).items():
                    expected[tenant, kind] = expected.get((tenant, kind), 0) + value
    return expected, await tenant_tokens(http, url)


@pytest.mark.parametrize("server", ["fast", "aiohttp"])
async def test_each_tenants_tokens_are_the_usage_its_clients_were_answered(
    http: aiohttp.ClientSession, server: str
) -> None:
    fleet = await start_fleet(2, time_scale=200.0)
    try:
        async with running_proxy(config(fleet.urls, server=server, access_log=False)) as url:
            expected, counted = await exercise(http, url)
    finally:
        await fleet.close()
    assert expected["alpha", "prompt"] > expected["beta", "prompt"] > 0
    assert expected["alpha", "cached_prompt"] > 0  # (the test means something for the cached count)
    assert counted == {key: float(value) for key, value in expected.items()}


async def test_each_tenants_tokens_are_summed_over_the_workers(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    with saga_workers(tmp_path, "--no-access-log") as saga:
        expected, counted = await exercise(http, saga.url)
    assert expected["alpha", "completion"] > 0
    assert counted == {key: float(value) for key, value in expected.items()}
