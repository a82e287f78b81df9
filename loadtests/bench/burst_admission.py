"""`python -m loadtests.bench.burst_admission [--workers N]`: how far a burst of new workflows reaching the
proxy at once is admitted past a replica's KV room (docs/saga-policy.md, "Several workers").

Runs `saga serve --simulate 2 --workers N --policy saga --num-gpu-blocks-override 1000 --time-scale 10`
(two simulated replicas of 16k KV tokens: an admission limit of 24k tokens each at the default overcommit),
starts `--sessions` sessions at once, each three calls of a 4-6k-token prompt growing by tool output, and
reads `/saga/v1/state` every 10 ms. Prints each replica's peak `reserved_tokens` (every worker's summed) and
the wall time. Every call must answer 200: a failed call stops the run with its answer, nothing is averaged.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import threading
import time
from typing import Any

import aiohttp

from proxy.arg_types import at_least

LIMIT_TOKENS = 24_000  # 1,000 blocks of 16 tokens x overcommit 1.5


async def burst(url: str, sessions: int) -> tuple[list[int], float]:
    peak: dict[str, int] = {}
    done = asyncio.Event()

    async def sample(http: aiohttp.ClientSession) -> None:
        while not done.is_set():
            async with http.get(f"{url}/saga/v1/state") as r:
                state = await r.json()
            replicas: Any = state["replicas"]
            for rid, row in replicas.items() if isinstance(replicas, dict) else enumerate(replicas):
                peak[str(rid)] = max(peak.get(str(rid), 0), row["reserved_tokens"])
            await asyncio.sleep(0.01)

    async def session(i: int, http: aiohttp.ClientSession) -> None:
        messages = [
            {"role": "system", "content": f"agent {i} " + "word " * (4000 + 100 * i)},
            {"role": "user", "content": f"task {i}"},
        ]
        for _ in range(3):
            body = {"model": "saga-sim", "messages": messages, "max_tokens": 64, "session_id": f"burst-{i}"}
            async with http.post(f"{url}/v1/chat/completions", json=body) as r:
                if r.status != 200:
                    raise RuntimeError(f"session {i}: {r.status} {await r.text()}")
                answer = (await r.json())["choices"][0]["message"]["content"]
            messages += [
                {"role": "assistant", "content": answer},
                {"role": "user", "content": "tool output " * 300},
            ]

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http:
        sampler = asyncio.create_task(sample(http))
        started = time.monotonic()
        try:
            await asyncio.gather(*(session(i, http) for i in range(sessions)))
        finally:
            done.set()
            await sampler
        return sorted(peak.values(), reverse=True), time.monotonic() - started


def run(workers: int, sessions: int) -> tuple[list[int], float]:
    cmd = [sys.executable, "-m", "proxy.cli", "serve", "--simulate", "2", "--workers", str(workers)]
    cmd += ["--policy", "saga", "--num-gpu-blocks-override", "1000", "--time-scale", "10", "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        url = next(line.split()[4] for line in proc.stdout if line.startswith("SAGA proxy listening on "))
        threading.Thread(target=lambda: [None for _ in proc.stdout or ()], daemon=True).start()  # drain logs
        return asyncio.run(burst(url, sessions))
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=at_least(1), default=2)
    parser.add_argument("--sessions", type=at_least(1), default=16)
    parser.add_argument("--runs", type=at_least(1), default=2)
    args = parser.parse_args()
    for _ in range(args.runs):
        peaks, wall = run(args.workers, args.sessions)
        shown = " / ".join(f"{p / 1000:.1f}k" for p in peaks)
        print(
            f"workers {args.workers}, {args.sessions} sessions at once: peak reserved per replica {shown} "
            f"(limit {LIMIT_TOKENS / 1000:.0f}k), wall {wall:.1f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
