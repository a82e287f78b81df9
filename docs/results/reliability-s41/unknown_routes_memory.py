"""The proxy's memory under a flood of requests it refuses as unknown routes or methods (`GET /v1/x` 404,
`POST /health` 405: open to any client), 32 connections for SPAM_S seconds (default 20), compiled; prints the
proxy's RSS before and after and the bytes each request left. Prints DEFECT past +50 MiB.

Usage: SAGA_ROOT=/a/tree python3 docs/results/reliability-s41/unknown_routes_memory.py [METHOD PATH]
(METHOD PATH: `GET /v1/x` by default, or e.g. `POST /health`; SAGA_ROOT: the tree whose
`saga serve --simulate 1` runs, default this checkout)."""

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

ROOT = os.environ.get("SAGA_ROOT", str(Path(__file__).resolve().parents[3]))
SPAM_S = float(os.environ.get("SPAM_S", "20"))
METHOD, PATH = (sys.argv[1], sys.argv[2]) if len(sys.argv) > 2 else ("GET", "/v1/x")


def start() -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, "-m", "proxy.cli", "serve", "--port", "0", "--simulate", "1", "--no-access-log"]
    env = {k: v for k, v in os.environ.items() if k != "SAGA_PURE_PYTHON"}
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={**env, "PYTHONPATH": ROOT},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if found:
            return proc, int(found.group(1))
    raise RuntimeError("the proxy did not start")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


async def main() -> None:
    proc, port = start()
    url = f"http://127.0.0.1:{port}{PATH}"
    counts: dict[int, int] = {}
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as http:

            async def client(stop: float) -> None:
                while time.time() < stop:
                    async with http.request(METHOD, url, data=b"{}") as r:
                        await r.read()
                        counts[r.status] = counts.get(r.status, 0) + 1

            await asyncio.sleep(1)
            before = rss_mib(proc.pid)
            stop = time.time() + SPAM_S
            await asyncio.gather(*(client(stop) for _ in range(32)))
            after = rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait()
    n = sum(counts.values())
    print(
        f"{METHOD} {PATH}: {n} requests in {SPAM_S:g} s, statuses {counts}; "
        f"RSS {before:.0f} -> {after:.0f} MiB ({(after - before) * 2**20 / n:+.0f} bytes a request)"
    )
    if after - before > 50:
        print(f"DEFECT: +{after - before:.0f} MiB from {n} refused requests")


asyncio.run(main())
