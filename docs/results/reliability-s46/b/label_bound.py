# ruff: noqa
"""600 distinct tenant ids: the token counters keep <= 256 + _other labels and lose no tokens."""

import asyncio, json
from common import *
import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from proxy.config import ProxyConfig
from proxy.server import running_proxy

U = {"prompt_tokens": 10, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 2}}


async def handler(m, path, hd, body):
    yield (
        "w",
        json_answer(
            {
                "id": "x",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
                ],
                "usage": U,
            }
        ),
    )


async def main():
    rep = FakeReplica(28181, handler)
    url = await rep.start()
    cfg = ProxyConfig(replicas=[url], port=28180, access_log=False)
    N = 600
    async with running_proxy(cfg) as purl, aiohttp.ClientSession() as h:
        sem = asyncio.Semaphore(16)

        async def call(i):
            async with sem:
                b = {"model": "m", "messages": [{"role": "user", "content": f"c{i}"}]}
                async with h.post(
                    purl + "/v1/chat/completions",
                    json=b,
                    headers={"X-Tenant-ID": f"tenant-{i}", "X-Session-ID": f"s{i}"},
                ) as r:
                    await r.read()

        await asyncio.gather(*(call(i) for i in range(N)))
        async with h.get(purl + "/metrics") as r:
            text = await r.text()
    await rep.stop()
    for fam in text_string_to_metric_families(text):
        if fam.name == "saga_tenant_prompt_tokens":
            labels = [s.labels["tenant"] for s in fam.samples if s.name.endswith("_total")]
            total = sum(s.value for s in fam.samples if s.name.endswith("_total"))
            ok = len(labels) <= 257 and total == N * 10
            print(
                ("OK" if ok else "DEFECT")
                + f": {N} tenants -> {len(labels)} labels (_other present: {'_other' in labels}), summed prompt {total} want {N * 10}"
            )


asyncio.run(main())
