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
import contextlib
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

WORK = Path("/tmp/saga-flood")


def _schedstat(pid: int) -> tuple[float, float]:
    cpu_ns, wait_ns, _ = (int(x) for x in Path(f"/proc/{pid}/schedstat").read_text().split())
    return cpu_ns / 1e9, wait_ns / 1e9


def _rss_mib(pid: int) -> float:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def _processes(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children] or [pid]


def failures(wrk_output: str) -> str:
    """What failed in a wrk run, said (answers other than 2xx/3xx and socket errors), or "" when nothing
    did: a round with failures is reported as such, not averaged into the others."""
    bench = _bench()
    non_2xx = bench.parse_wrk(wrk_output)[3]
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", wrk_output)
    socket_errors = sum(int(n) for n in sockets.groups()) if sockets else 0
    if not non_2xx and not socket_errors:
        return ""
    return f" FAILED: {non_2xx} not 2xx, {socket_errors} socket errors"


def wrk_quantiles(wrk_output: str) -> str:
    """wrk's p50/p90/p99 as it printed them, and what failed (`failures`)."""
    found = re.findall(r"^\s+(50|90|99)%\s+(\S+)$", wrk_output, re.M)
    return " ".join(f"p{p} {v}" for p, v in found) + failures(wrk_output)


def _bench() -> Any:
    from loadtests.bench import overhead

    return overhead


@contextlib.contextmanager
def proxied(
    tree: str, mode: str, serve_args: list[str], extra_path: str = "", log: Path | None = None
) -> Iterator[tuple[str, str, int]]:
    """nginx answering the overhead bench's fixed chat completion (`mode` json) or stream (sse), and
    `saga serve` from `tree` in front of it (its modules that checkout's; `extra_path` before them on its
    path, its log lines to `log`): yields the proxy's and nginx's call URLs and the proxy's pid (the
    supervisor's, with `--workers N`)."""
    sys.path.insert(0, tree)
    bench = _bench()
    WORK.mkdir(exist_ok=True)
    backend_port, port = bench._free_port(), bench._free_port()
    body, kind = (
        (bench.CHAT_SSE, "text/event-stream") if mode == "sse" else (bench.CHAT_JSON, "application/json")
    )
    conf = bench._nginx_conf(WORK, backend_port, body, kind)
    backend = f"http://127.0.0.1:{backend_port}"
    cmd = [sys.executable, "-m", "proxy.cli", "serve", "--replica", backend, "--port", str(port), *serve_args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (extra_path, tree) if p)}
    with contextlib.ExitStack() as stack:
        nginx = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(WORK), "-g", "daemon off;"])
        stack.callback(bench._stop, nginx)
        bench._wait_http(backend + "/health")
        stderr = stack.enter_context(log.open("w")) if log is not None else subprocess.DEVNULL
        # run in `tree`: `python -m` puts the working directory first on the path
        proxy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, cwd=tree, env=env)
        stack.callback(bench._stop, proxy)
        bench._wait_http(f"http://127.0.0.1:{port}/health")
        yield f"http://127.0.0.1:{port}/v1/chat/completions", backend + "/v1/chat/completions", proxy.pid


def wrk_script(mode: str, rate: float | None = None) -> Path:
    """The bench's wrk script for a one-line call naming no session (`rate`: paced, as `--rate`)."""
    import msgspec

    bench = _bench()
    script = WORK / f"wrk-{mode}-{rate}.lua"
    request = msgspec.json.encode({**bench.request_fields("plain"), "stream": mode == "sse"}).decode()
    script.write_text(bench.wrk_script(request, 32, rate, "none"))
    return script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", default=str(Path(__file__).resolve().parents[3]))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--mode", choices=("json", "sse"), default="json", help="whole answers or streams")
    parser.add_argument("serve_args", nargs="*", help="extra `saga serve` flags (after --)")
    args = parser.parse_args()
    with proxied(args.tree, args.mode, args.serve_args) as (url, _, pid):
        wrk = ["wrk", "-t1", "-c32", "-s", str(wrk_script(args.mode)), "--latency", url]
        subprocess.run([*wrk, "-d1s"], capture_output=True, check=True)
        for n in range(1, args.rounds + 1):
            pids = _processes(pid)
            before = {p: _schedstat(p) for p in pids}
            out = subprocess.run([*wrk, f"-d{args.seconds}s"], capture_output=True, text=True, check=True)
            rps, _, p99, _, _ = _bench().parse_wrk(out.stdout)
            after = {p: _schedstat(p) for p in pids}
            sched = ", ".join(
                f"pid {p}: cpu {after[p][0] - before[p][0]:.2f} s, run-queue wait "
                f"{after[p][1] - before[p][1]:.2f} s, RSS {_rss_mib(p):.0f} MiB"
                for p in pids
            )
            print(
                f"round {n}: {rps:,.0f} req/s, p99 {p99:.2f} ms ({sched}){failures(out.stdout)}", flush=True
            )
        metrics = urllib.request.urlopen(url.replace("/v1/chat/completions", "/metrics")).read().decode()
        shown = ("saga_sessions ", "saga_handoffs_total")
        print("\n".join(line for line in metrics.splitlines() if line.startswith(shown)))


if __name__ == "__main__":
    main()
