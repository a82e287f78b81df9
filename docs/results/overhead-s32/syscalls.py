"""Syscalls and CPU (user, system) per proxied call: `saga serve` (defaults) and vllm-router `round_robin` in
front of the overhead bench's nginx backend, wrk 32 connections; syscalls counted with `strace -c -f`.

Run from the repository root: `python3 docs/results/overhead-s32/syscalls.py json saga,vllm-router`
(needs nginx, wrk, strace and vllm-router; writes its scratch files under /tmp/probe/wd).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import msgspec

from loadtests.bench import overhead as o
from loadtests.bench.peers import RouterSpec, peer_command

STRACE_LINE = re.compile(r"\s*([\d.]+)\s+([\d.]+)\s+(\d+)\s+(\d+)\s+(\d*)\s*(\w+)")


def user_system_ticks(pid: int) -> tuple[int, int]:
    """utime and stime of every thread of `pid`, in clock ticks."""
    user = system = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().split(")")[1].split()
        user, system = user + int(fields[11]), system + int(fields[12])
    return user, system


def measure(target: str, backend: str, script: Path, workdir: Path) -> None:
    port = o._free_port()
    if target == "saga":
        cmd = [sys.executable, "-m", "proxy.cli", "serve", "--replica", backend, "--port", str(port)]
    else:
        spec = RouterSpec("vllm-router", "round_robin")
        cmd = peer_command(spec, [backend], port=port, metrics_port=o._free_port(), time_scale=1.0)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/tmp")
    try:
        url = f"http://127.0.0.1:{port}"
        o._wait_http(url + "/health")
        o._wrk(url + "/v1/chat/completions", script, 32, 2.0)  # warm-up
        before = user_system_ticks(proc.pid)
        rps, _, p99, _, total = o.parse_wrk(o._wrk(url + "/v1/chat/completions", script, 32, 4.0))
        after = user_system_ticks(proc.pid)
        tick_us = 1e6 / os.sysconf("SC_CLK_TCK") / total
        user, system = (after[0] - before[0]) * tick_us, (after[1] - before[1]) * tick_us
        print(f"{target}: {rps:.0f} req/s, p99 {p99} ms, user {user:.0f} + system {system:.0f} us/call")
        counts = workdir / f"strace-{target}.txt"
        tracer = subprocess.Popen(["strace", "-c", "-f", "-p", str(proc.pid), "-o", str(counts)])
        time.sleep(1.0)
        total = o.parse_wrk(o._wrk(url + "/v1/chat/completions", script, 32, 3.0))[4]
        time.sleep(0.2)
        tracer.send_signal(2)
        tracer.wait()
        print(f"  under strace: {total} calls")
        for line in counts.read_text().splitlines():
            m = STRACE_LINE.match(line)
            if m and int(m.group(4)) > total * 0.05:
                print(f"    {m.group(6):16s} {int(m.group(4)) / total:6.2f}/call")
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "json"
    targets = sys.argv[2].split(",") if len(sys.argv) > 2 else ["saga", "vllm-router"]
    workdir = Path("/tmp/probe/wd")
    workdir.mkdir(parents=True, exist_ok=True)
    stream = mode == "sse"
    backend_port = o._free_port()
    body, kind = (o.CHAT_SSE, "text/event-stream") if stream else (o.CHAT_JSON, "application/json")
    conf = o._nginx_conf(workdir, backend_port, body, kind)
    nginx = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(workdir), "-g", "daemon off;"])
    try:
        backend = f"http://127.0.0.1:{backend_port}"
        o._wait_http(backend + "/health")
        request = msgspec.json.encode({**o.request_fields("plain"), "stream": stream}).decode()
        script = workdir / "wrk.lua"
        script.write_text(o.wrk_script(request, 32, None))
        for target in targets:
            measure(target, backend, script, workdir)
    finally:
        nginx.terminate()
        nginx.wait()


if __name__ == "__main__":
    main()
