"""How long SAGA's event loop goes without serving a call, under a paced load (an experiment, not a bench).

    python3 docs/results/overhead-s16/loop_lag.py [RATE]    # from the repo root; requests/s, default 2000

Starts nginx answering a fixed chat completion (`saga bench overhead`'s backend), SAGA in this process with
every default in front of it, and wrk paced at RATE over 32 connections for 10 s (the bench's Lua script,
no session ids). A probe task sleeps 1 ms in a loop and records each wake-up more than 2 ms late, with how
much of that the thread spent waiting for a CPU (/proc/thread-self/schedstat) and the cyclic GC's
collections near it (`gc.callbacks`). Prints wrk's latency distribution, the late wake-ups (count, over
5 ms, the largest twelve) and the GC's collections. `LAGDEBUG=1` also logs, through asyncio's debug mode,
every callback that held the loop over 3 ms (debug mode slows everything: read only which callbacks).
`TIMETICK=1` (with `SAGA_PURE_PYTHON=1`: compiled classes cannot be wrapped) also times each
`SchedulerCore.tick` and the `WorkflowAdmission.expire` inside it, and prints their count, median and most.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import uvloop

from loadtests.bench.overhead import CHAT_JSON, _nginx_conf, _wait_http, wrk_script
from proxy.config import ProxyConfig
from proxy.server import freeze_start_up_heap, running_proxy

RATE = float(sys.argv[1]) if len(sys.argv) > 1 else 2000.0
timed: dict[str, list[float]] = {}  # with TIMETICK: ms per call of each wrapped method


def _time_calls(cls: type, name: str) -> None:
    original = getattr(cls, name)

    def wrapper(self: object, *args: object) -> object:
        started = time.perf_counter()
        try:
            return original(self, *args)
        finally:
            timed.setdefault(f"{cls.__name__}.{name}", []).append((time.perf_counter() - started) * 1e3)

    setattr(cls, name, wrapper)


if os.environ.get("TIMETICK"):
    from proxy.scheduler.admission import WorkflowAdmission
    from proxy.scheduler.core import SchedulerCore

    _time_calls(SchedulerCore, "tick")
    _time_calls(WorkflowAdmission, "expire")
BODY = '{"model":"m","messages":[{"role":"user","content":"hi"}]}'


def _run_delay_ns() -> int:
    with open("/proc/thread-self/schedstat") as f:
        return int(f.read().split()[1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


collections: list[tuple[float, int, float]] = []  # (when, generation, ms)
_gc_started = [0.0]


def _on_gc(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_started[0] = time.perf_counter()
    else:
        spent_ms = (time.perf_counter() - _gc_started[0]) * 1e3
        collections.append((time.monotonic(), info["generation"], spent_ms))


async def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    port = _free_port()
    conf = _nginx_conf(tmp, port, CHAT_JSON, "application/json")
    nginx = subprocess.Popen(["nginx", "-c", str(conf), "-g", "daemon off;"])  # noqa: ASYNC220 (set-up, before the load)
    try:
        _wait_http(f"http://127.0.0.1:{port}/health")
        async with running_proxy(ProxyConfig(replicas=[f"http://127.0.0.1:{port}"], port=0)) as url:
            freeze_start_up_heap()  # as `saga serve` does
            gc.callbacks.append(_on_gc)
            loop = asyncio.get_running_loop()
            if os.environ.get("LAGDEBUG"):
                logging.basicConfig(level=logging.WARNING)
                loop.set_debug(True)
                loop.slow_callback_duration = 0.003
            late: list[tuple[float, float, float]] = []  # (when, ms late, ms waiting for a CPU)
            stop = asyncio.Event()

            async def probe() -> None:
                while not stop.is_set():
                    started, queued = time.perf_counter(), _run_delay_ns()
                    await asyncio.sleep(0.001)
                    lag = time.perf_counter() - started - 0.001
                    if lag > 0.002:
                        late.append((time.monotonic(), lag * 1e3, (_run_delay_ns() - queued) / 1e6))

            task = asyncio.create_task(probe())
            script = tmp / "load.lua"
            script.write_text(wrk_script(BODY, 32, RATE))
            began = time.monotonic()
            wrk = await asyncio.create_subprocess_exec(
                "wrk",
                "-t1",
                "-c32",
                "-d10s",
                "--latency",
                "-s",
                str(script),
                f"{url}/v1/chat/completions",
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await wrk.communicate()
            stop.set()
            await task
    finally:
        nginx.terminate()
    print(out.decode()[-700:])
    largest, total = max((ms for _, ms, _ in late), default=0.0), sum(ms for _, ms, _ in late)
    queued_ms = sum(q for _, _, q in late)
    print(
        f"wake-ups over 2 ms late: {len(late)}, over 5 ms: {sum(ms > 5 for _, ms, _ in late)}, "
        f"largest {largest:.1f} ms; of their {total:.0f} ms, {queued_ms:.0f} waiting for a CPU"
    )
    for when, ms, queued in sorted(late, key=lambda x: -x[1])[:12]:
        near = [f"gen{g} {d:.1f} ms" for t, g, d in collections if abs(t - when) < 0.02]
        print(f"  at {when - began:6.3f} s: {ms:5.1f} ms late, {queued:4.1f} ms for a CPU, GC near: {near}")
    by_gen = Counter(g for _, g, _ in collections)
    print("GC collections by generation:", dict(by_gen))
    for name, ms in timed.items():
        ms.sort()
        print(f"{name}: {len(ms)} calls, median {ms[len(ms) // 2]:.2f} ms, most {ms[-1]:.2f} ms")


if __name__ == "__main__":
    uvloop.run(main())
