"""Replica health checks and load scraping, feeding `replica_stats` events to the core.

Each round probes every replica's `/health` and, for healthy ones, reads vLLM's queue and KV gauges from
`/metrics`; then it lets the core do its periodic housekeeping (`tick`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from proxy.scheduler import Decision, ReplicaStats, SchedulerCore

log = logging.getLogger("saga.health")

_GAUGES = {
    "vllm:num_requests_waiting": "waiting",
    "vllm:num_requests_running": "running",
    "vllm:kv_cache_usage_perc": "kv_usage",
}


def parse_load(metrics_text: str) -> dict[str, float]:
    """vLLM's load gauges summed over engines (a replica may run several); missing gauges are left out."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        field = _GAUGES.get(family.name)
        if field is not None:
            values = [s.value for s in family.samples]
            found[field] = sum(values) if field != "kv_usage" else max(values, default=0.0)
    return found


async def probe(session: aiohttp.ClientSession, replica_id: str, timeout_s: float) -> ReplicaStats:
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with session.get(replica_id + "/health", timeout=timeout) as resp:
            if resp.status != 200:
                return ReplicaStats(replica_id, healthy=False)
        async with session.get(replica_id + "/metrics", timeout=timeout) as resp:
            load = parse_load(await resp.text()) if resp.status == 200 else {}
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return ReplicaStats(replica_id, healthy=False)
    waiting, running = load.get("waiting"), load.get("running")
    return ReplicaStats(
        replica_id,
        healthy=True,
        waiting=None if waiting is None else int(waiting),
        running=None if running is None else int(running),
        kv_usage=load.get("kv_usage"),
    )


async def replica_health_loop(
    core: SchedulerCore,
    session: aiohttp.ClientSession,
    apply: Callable[[list[Decision]], None],
    interval_s: float,
) -> None:
    while True:
        results = await asyncio.gather(*(probe(session, r, interval_s) for r in list(core.replicas)))
        for stats in results:
            was = core.replicas.get(stats.replica_id)
            if was is not None and was.healthy != stats.healthy:
                log.warning("replica %s is now %s", stats.replica_id, "up" if stats.healthy else "down")
            apply(core.replica_stats(stats))
        apply(core.tick())
        await asyncio.sleep(interval_s)
