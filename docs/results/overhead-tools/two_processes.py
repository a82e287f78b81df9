"""An experiment, not a feature: what two `saga serve` processes sharing one port (SO_REUSEPORT) serve in
front of nginx, beside one process and vllm-router, in alternating rounds
(as `saga bench overhead` runs them).

Each process has its own scheduler core, so this is an upper bound on what a multi-process proxy could serve,
not a working mode: a session whose calls land on both processes is scheduled twice (docs/results/overhead.md,
"Two processes on one port"). Run from the repository root, with nginx, wrk and vllm-router installed:

    python3 docs/results/overhead-tools/two_processes.py [PROCESSES] [ROUNDS] ["extra saga serve flags"]

The listening socket gets SO_REUSEPORT by wrapping the running loop's `create_server` in proxy/server.py's
view of asyncio (`--child` is how each process is started).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))


def child(argv: list[str]) -> int:
    """`saga serve argv`, its listener bound with SO_REUSEPORT."""
    import proxy.server as server
    from proxy.cli import main

    class ReusePortLoop:
        def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
            self._loop = loop

        def __getattr__(self, name: str) -> Any:
            return getattr(self._loop, name)

        async def create_server(self, *args: Any, **kwargs: Any) -> Any:
            return await self._loop.create_server(*args, reuse_port=True, **kwargs)

    shim = types.ModuleType("asyncio_reuse_port")
    shim.__dict__.update(asyncio.__dict__)
    shim.get_running_loop = lambda: ReusePortLoop(asyncio.get_running_loop())  # type: ignore[attr-defined]
    server.asyncio = shim  # type: ignore[attr-defined]
    return main(argv)


def bench(processes: int, rounds: int, extra: list[str]) -> None:
    from loadtests.bench import overhead as o
    from loadtests.bench.peers import RouterSpec, peer_command

    work = Path(tempfile.mkdtemp())
    backend_port = o._free_port()
    conf = o._nginx_conf(work, backend_port, o.CHAT_JSON, "application/json")
    backend = f"http://127.0.0.1:{backend_port}"
    script = work / "wrk.lua"
    script.write_text(o.wrk_script(msgspec.json.encode({**o.REQUEST, "stream": False}).decode(), 32, None))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with contextlib.ExitStack() as stack:
        nginx = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(work), "-g", "daemon off;"])
        stack.callback(o._stop, nginx)
        o._wait_http(backend + "/health")
        shared = o._free_port()
        pids = []
        for _ in range(processes):
            cmd = [sys.executable, __file__, "--child", "serve", "--replica", backend, "--port", str(shared)]
            cmd += extra
            pids.append(stack.enter_context(o._started(cmd, f"http://127.0.0.1:{shared}/health", env)))
            time.sleep(1.0)  # the next one binds beside a listener that is up
        single = o._free_port()
        cmd = [sys.executable, "-m", "proxy.cli", "serve", "--replica", backend, "--port", str(single)]
        cmd += extra
        one = stack.enter_context(o._started(cmd, f"http://127.0.0.1:{single}/health", env))
        peer = o._free_port()
        spec = RouterSpec("vllm-router", "round_robin")
        cmd = peer_command(spec, [backend], port=peer, metrics_port=o._free_port(), time_scale=1.0)
        router = stack.enter_context(o._started(cmd, f"http://127.0.0.1:{peer}/health"))
        targets = {
            f"saga x{processes}": (shared, pids),
            "vllm-router": (peer, [router]),
            "saga x1": (single, [one]),
        }
        for port, _ in targets.values():  # warm-up
            o._wrk(f"http://127.0.0.1:{port}/v1/chat/completions", script, 32, 1.0)
        for r in range(rounds):
            for name, (port, procs) in targets.items():
                before = sum(o._cpu_seconds(p) for p in procs)
                out = o._wrk(f"http://127.0.0.1:{port}/v1/chat/completions", script, 32, 3.0)
                cpu = sum(o._cpu_seconds(p) for p in procs) - before
                rps, p50, p99, bad, total = o.parse_wrk(out)
                print(
                    f"round {r} {name:12s} {rps:8.0f} req/s  p50 {p50:.2f} ms  p99 {p99:.2f} ms  "
                    f"CPU {cpu / max(total, 1) * 1e6:.0f} µs/call  non-2xx {bad}",
                    flush=True,
                )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        sys.exit(child(sys.argv[2:]))
    bench(
        int(sys.argv[1]) if len(sys.argv) > 1 else 2,
        int(sys.argv[2]) if len(sys.argv) > 2 else 3,
        sys.argv[3].split() if len(sys.argv) > 3 else [],
    )
