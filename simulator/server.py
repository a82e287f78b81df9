"""Fleets of simulated vLLM replicas served over loopback HTTP, in the caller's event loop.

Contract: `start_fleet(n)` starts n replicas (names "sim-0".., one engine, driver and aiohttp server each)
and returns once all accept connections; `ReplicaFleet.urls[i]` serves `replicas[i]`; `close()` stops
servers and drivers. `serve_fleet_forever` is the `saga sim` command: start, print one URL per line, run
until cancelled. With `kv_events_endpoint` (vLLM's endpoint forms, simulator.kv_publisher) replica i publishes
KV-cache events on that endpoint's port + i, or on its own ephemeral port for `tcp://127.0.0.1:*`.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from aiohttp import web

from simulator.cost_model import get_profile
from simulator.faults import FAULTS, Listener
from simulator.kv_publisher import replica_endpoint
from simulator.replica import Replica
from simulator.routes import create_app
from simulator.tokenizer import Tokenizer

__all__ = ["Replica", "ReplicaFleet", "serve_fleet_forever", "start_fleet"]

log = logging.getLogger(__name__)


class ReplicaFleet:
    """Running replicas: `urls[i]` serves `replicas[i]`."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.replicas: list[Replica] = []
        self._runners: list[web.AppRunner] = []

    def lag_s(self) -> float:
        """The most wall seconds any replica fell behind its schedule (`ReplicaDriver.lag_s`)."""
        return max((replica.driver.lag_s for replica in self.replicas), default=0.0)

    async def close(self) -> None:
        """Stop every server and engine driver (in-flight requests are cut off)."""
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=1024)


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _crashable(runner: web.AppRunner, host: str, port: int) -> Listener:
    """The `crash` fault's hooks: close the socket and cut every connection; listen again on the port."""

    async def stop(keep: object | None) -> None:
        for site in list(runner.sites):
            await site.stop()
        if runner.server is not None:
            for connection in runner.server.connections:
                if connection is not keep:
                    connection.force_close()

    async def start() -> None:
        await web.SockSite(runner, _listen(host, port)).start()

    return Listener(stop, start)


async def start_fleet(
    n: int,
    *,
    host: str = "127.0.0.1",
    base_port: int = 0,
    time_scale: float = 1.0,
    profile: str = "llama3-8b-h100",
    model: str = "saga-sim",
    scheduling_policy: str = "priority",
    kv_events_endpoint: str | None = None,
    hash_algo: str = "sha256",
    num_gpu_blocks: int | None = None,
    kv_offload_gib: float | None = None,
) -> ReplicaFleet:
    """Start n replicas in this process; base_port=0 picks free ephemeral ports, else ports
    base_port..base_port+n-1. `scheduling_policy` is vLLM's --scheduling-policy ('priority' here, so the
    proxy's priorities take effect; requests without one behave as under 'fcfs'); `hash_algo` its
    --prefix-caching-hash-algo (simulator.block_hash); `num_gpu_blocks` its --num-gpu-blocks-override (KV
    capacity in blocks, default the profile's); `kv_offload_gib` its --kv-offloading-size with the native
    backend (a CPU KV pool per replica, simulator.offload)."""
    if n < 1:
        raise ValueError(f"a fleet needs at least one replica, got {n}")
    engine_profile = get_profile(profile)
    tokenizer = Tokenizer()  # shared: its caches are per process, its ids the same everywhere
    fleet = ReplicaFleet()
    try:
        for i in range(n):
            replica = Replica(
                f"sim-{i}",
                profile=engine_profile,
                model=model,
                time_scale=time_scale,
                scheduling_policy=scheduling_policy,
                tokenizer=tokenizer,
                hash_algo=hash_algo,
                num_gpu_blocks=num_gpu_blocks,
                kv_offload_gib=kv_offload_gib,
                kv_events_endpoint=None
                if kv_events_endpoint is None
                else replica_endpoint(kv_events_endpoint, i),
            )
            app = create_app(replica)
            runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
            await runner.setup()
            fleet._runners.append(runner)
            sock = _listen(host, base_port + i if base_port else 0)
            await web.SockSite(runner, sock).start()
            app[FAULTS].listener = _crashable(runner, host, sock.getsockname()[1])
            fleet.replicas.append(replica)
            fleet.urls.append(_url(host, sock.getsockname()[1]))
    except BaseException:
        await fleet.close()
        raise
    return fleet


async def serve_fleet_forever(
    n: int,
    *,
    host: str,
    base_port: int,
    time_scale: float,
    profile: str,
    model: str,
    kv_events_endpoint: str | None = None,
    hash_algo: str = "sha256",
    num_gpu_blocks: int | None = None,
    kv_offload_gib: float | None = None,
) -> None:
    """For the `saga sim` command: start, print one line per replica URL (and log each KV-events endpoint),
    run until cancelled."""
    fleet = await start_fleet(
        n,
        host=host,
        base_port=base_port,
        time_scale=time_scale,
        profile=profile,
        model=model,
        kv_events_endpoint=kv_events_endpoint,
        hash_algo=hash_algo,
        num_gpu_blocks=num_gpu_blocks,
        kv_offload_gib=kv_offload_gib,
    )
    try:
        for url, replica in zip(fleet.urls, fleet.replicas, strict=True):
            print(url, flush=True)
            if replica.kv_publisher is not None:
                log.info(
                    "%s (%s) publishes KV events on %s", replica.name, url, replica.kv_publisher.endpoint
                )
        await asyncio.Event().wait()
    finally:
        await fleet.close()
