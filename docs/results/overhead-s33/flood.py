"""Consecutive rounds of one-line calls naming no session against one `saga serve`, to see whether the proxy
slows down as it runs (thirty-third session, docs/results/overhead.md).

    python3 docs/results/overhead-s33/flood.py [--tree DIR] [--rounds N] [--seconds S] [--mode json|sse]
        [-- saga serve flags]

Starts nginx answering a fixed chat completion or stream (the overhead bench's backend) and `saga serve`
from `--tree` (a checkout, compiled in place; default: this one), warms it for a second with wrk, then runs
`--rounds` rounds of wrk (1 thread, 32 connections) and prints, per round, requests/s, the p99 and, for each
proxy process (the workers with `--workers N`), its CPU seconds, the seconds it waited on a run queue
(/proc/PID/schedstat) and its resident memory. A worker that waits there while its connections' calls wait
for it is where a p99 of several times the p50 comes from on a 2-core host shared with wrk and nginx.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import urllib.request
from pathlib import Path


def _schedstat(pid: int) -> tuple[float, float]:
    cpu_ns, wait_ns, _ = (int(x) for x in Path(f"/proc/{pid}/schedstat").read_text().split())
    return cpu_ns / 1e9, wait_ns / 1e9


def _rss_mib(pid: int) -> float:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def _processes(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children] or [pid]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", default=str(Path(__file__).resolve().parents[3]))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--mode", choices=("json", "sse"), default="json", help="whole answers or streams")
    parser.add_argument("serve_args", nargs="*", help="extra `saga serve` flags (after --)")
    args = parser.parse_args()
    sys.path.insert(0, args.tree)
    import msgspec

    from loadtests.bench import overhead as bench

    work = Path("/tmp/saga-flood")
    work.mkdir(exist_ok=True)
    backend_port, port = bench._free_port(), bench._free_port()
    stream = args.mode == "sse"
    body, kind = (bench.CHAT_SSE, "text/event-stream") if stream else (bench.CHAT_JSON, "application/json")
    conf = bench._nginx_conf(work, backend_port, body, kind)
    nginx = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(work), "-g", "daemon off;"])
    backend = f"http://127.0.0.1:{backend_port}"
    bench._wait_http(backend + "/health")
    cmd = [sys.executable, "-m", "proxy.cli", "serve", "--replica", backend, "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": args.tree}
    proxy = subprocess.Popen(
        cmd + args.serve_args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=args.tree, env=env
    )
    try:
        bench._wait_http(f"http://127.0.0.1:{port}/health")
        script = work / "wrk.lua"
        request = msgspec.json.encode({**bench.request_fields("plain"), "stream": stream}).decode()
        script.write_text(bench.wrk_script(request, 32, None, "none"))
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        wrk = ["wrk", "-t1", "-c32", "-s", str(script), "--latency", url]
        subprocess.run([*wrk, "-d1s"], capture_output=True, check=True)
        for n in range(1, args.rounds + 1):
            pids = _processes(proxy.pid)
            before = {p: _schedstat(p) for p in pids}
            out = subprocess.run([*wrk, f"-d{args.seconds}s"], capture_output=True, text=True, check=True)
            rps, _, p99, _, _ = bench.parse_wrk(out.stdout)
            sched = ", ".join(
                f"pid {p}: cpu {_schedstat(p)[0] - before[p][0]:.2f} s, run-queue wait "
                f"{_schedstat(p)[1] - before[p][1]:.2f} s, RSS {_rss_mib(p):.0f} MiB"
                for p in pids
            )
            print(f"round {n}: {rps:,.0f} req/s, p99 {p99:.2f} ms ({sched})", flush=True)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        shown = ("saga_sessions ", "saga_handoffs_total")
        print("\n".join(line for line in metrics.splitlines() if line.startswith(shown)))
    finally:
        proxy.terminate()
        proxy.wait()
        nginx.terminate()
        nginx.wait()


if __name__ == "__main__":
    main()
