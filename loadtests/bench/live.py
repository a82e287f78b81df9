"""`saga bench live`: the same seeded agent workload through SAGA and through each peer router, over HTTP.

Contract: for each router in turn, a fresh fleet of simulated replicas (cold caches, same seed) is started on
loopback, the router in front of it, and the tasks run through the router with the agent client (closed loop
of `concurrency` agents, or each task's own arrival time). Replicas run `time_scale` times faster than real
time and every time reported is workload time. A router that cannot run here (a peer not installed, or it
fails to start) is reported in `missing`, never silently dropped. Engine figures (preemptions, mean KV
utilisation) are read from the in-process replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence

import aiohttp

from loadtests.agent_client import AgentClient
from loadtests.bench.peers import RouterSpec, needs_kv_events, peer_command, saga_policy, unavailable
from loadtests.tasks import AgentTask, TaskRecord
from proxy.config import KvEventsConfig, ProxyConfig
from proxy.kv_event_sources import parse_sources
from proxy.server import running_proxy
from simulator.cost_model import get_profile
from simulator.server import ReplicaFleet, start_fleet

STARTUP_TIMEOUT_S = 60.0


class RouterFailed(RuntimeError):
    """A router did not come up; the message says why."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _kv_event_sources(http: aiohttp.ClientSession, urls: Sequence[str]) -> dict[str, str]:
    """Each simulated replica's publisher (its one rank, 0), from its `/kv_event_sources` (vLLM's answer), for
    the peer routers, which are told their endpoints."""
    sources = {}
    for url in urls:
        async with http.get(f"{url}/kv_event_sources") as r:
            sources[url] = parse_sources(await r.read(), url)[0]
    return sources


async def _subscribed(http: aiohttp.ClientSession, url: str) -> None:
    """Until SAGA has found and subscribed to every replica's publishers, so that no run's first events go
    unseen; a router that cannot within the start-up time fails."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            async with http.get(f"{url}/saga/v1/replicas") as r:
                r.raise_for_status()
                rows = (await r.json())["replicas"]
            if rows and all((row.get("kv_events") or {}).get("ranks") for row in rows):
                return
        except (aiohttp.ClientError, ValueError, LookupError, TypeError, AttributeError, RecursionError) as e:
            raise RouterFailed(f"GET /saga/v1/replicas while waiting for KV events: {e!r}") from e
        await asyncio.sleep(0.1)
    raise RouterFailed(f"not subscribed to the replicas' KV events after {STARTUP_TIMEOUT_S:.0f} s")


async def _wait_ready(http: aiohttp.ClientSession, url: str, proc: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RouterFailed(f"exited with status {proc.returncode} while starting")
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.get(f"{url}/v1/models", timeout=aiohttp.ClientTimeout(total=2)) as r:
                if r.status == 200:
                    return
        await asyncio.sleep(0.2)
    raise RouterFailed(f"not ready after {STARTUP_TIMEOUT_S:.0f} s")


@contextlib.asynccontextmanager
async def running_router(
    spec: RouterSpec, fleet: ReplicaFleet, http: aiohttp.ClientSession, *, time_scale: float, profile: str
) -> AsyncIterator[str]:
    """Yields the base URL of router `spec` in front of `fleet`; stops it on exit."""
    if spec.kind == "saga":
        # SAGA finds each replica's publishers itself, asking it as it would a vLLM (`kv_events.discover`)
        kv_events = KvEventsConfig(port=None) if needs_kv_events(spec) else None
        config = ProxyConfig(
            replicas=list(fleet.urls),
            policy=saga_policy(spec),
            port=0,
            health_interval_s=0.5,
            access_log=False,
            time_scale=time_scale,
            kv_events=kv_events,
        )
        async with running_proxy(config) as url:
            if kv_events is not None:
                await _subscribed(http, url)
            yield url
        return
    port = _free_port()
    sources = await _kv_event_sources(http, fleet.urls) if needs_kv_events(spec) else None
    cmd = peer_command(
        spec,
        list(fleet.urls),
        port=port,
        metrics_port=_free_port(),
        time_scale=time_scale,
        kv_event_sources=sources,
        block_size=get_profile(profile).block_size,
    )
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        url = f"http://127.0.0.1:{port}"
        await _wait_ready(http, url, proc)
        yield url
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


class LiveRun:
    """What one router's run produced."""

    def __init__(
        self, records: list[TaskRecord], preemptions: int, kv_utilization_mean: float, replica_lag_s: float
    ) -> None:
        self.records = records
        self.preemptions = preemptions
        self.kv_utilization_mean = kv_utilization_mean
        self.replica_lag_s = replica_lag_s  # the most wall seconds a replica fell behind its clock


async def run_router(
    spec: RouterSpec,
    tasks: Sequence[AgentTask],
    *,
    replicas: int,
    profile: str,
    time_scale: float,
    concurrency: int | None,
    stream: bool = False,
    on_task_done: Callable[[], None] | None = None,
    kv_blocks: int | None = None,
) -> LiveRun:
    """Runs `tasks` through router `spec` on a fresh fleet; raises RouterFailed if the router cannot run."""
    reason = unavailable(spec)
    if reason is not None:
        raise RouterFailed(reason)
    fleet = await start_fleet(
        replicas,
        time_scale=time_scale,
        profile=profile,
        kv_events_endpoint="tcp://127.0.0.1:*" if needs_kv_events(spec) else None,
        num_gpu_blocks=kv_blocks,
    )
    samples: list[float] = []

    async def sample_kv() -> None:
        while True:
            samples.append(sum(r.engine.stats().kv_usage for r in fleet.replicas) / len(fleet.replicas))
            await asyncio.sleep(0.25)

    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as http,
            running_router(spec, fleet, http, time_scale=time_scale, profile=profile) as url,
        ):
            client = AgentClient(http, url, time_scale=time_scale, stream=stream)
            sampler = asyncio.create_task(sample_kv())
            try:
                records = await client.run_all(tasks, concurrency, on_task_done=on_task_done)
            finally:
                sampler.cancel()
        preemptions = sum(r.engine.stats().num_preemptions_total for r in fleet.replicas)
    finally:
        await fleet.close()
    return LiveRun(records, preemptions, sum(samples) / len(samples) if samples else 0.0, fleet.lag_s())
