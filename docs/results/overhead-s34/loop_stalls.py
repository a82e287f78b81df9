"""Where the anonymous load's p99 comes from: how long the event loop stalls, and how long each housekeeping
tick takes (thirty-fourth session, docs/results/overhead.md).

    python3 docs/results/overhead-s34/loop_stalls.py [--tree DIR] [--seconds S] [-- saga serve flags]

Starts nginx and `saga serve` from `--tree` as docs/results/overhead-s33/flood.py does, with a `sitecustomize`
on the proxy's path that (1) runs the housekeeping loop with each `SchedulerCore.tick()` timed and (2) starts
a watchdog task that sleeps 2 ms and reports each wake-up more than 4 ms late (a turn of the loop that long).
Drives it with wrk (1 thread, 32 connections, one-line calls naming no session) and prints wrk's p50/p99,
then each tick's time and each stall, from the proxy's log. The watchdog's own wake-ups cost some CPU: read
the stalls, not the throughput.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "overhead-s33"))
from flood import proxied, wrk_script

SITECUSTOMIZE = """
import asyncio, sys, time
import proxy.housekeeping as housekeeping

async def timed_loop(core, apply, interval_s):
    asyncio.get_running_loop().create_task(watchdog())
    while True:
        await asyncio.sleep(interval_s)
        started = time.perf_counter()
        decisions = core.tick()
        ticked = time.perf_counter()
        apply(decisions)
        print(f"TICK {time.time():.3f} tick {1e3 * (ticked - started):.2f} ms, "
              f"apply {1e3 * (time.perf_counter() - ticked):.2f} ms, {len(decisions)} decisions",
              file=sys.stderr, flush=True)

async def watchdog():
    while True:
        started = time.perf_counter()
        await asyncio.sleep(0.002)
        late = time.perf_counter() - started - 0.002
        if late > 0.004:
            print(f"STALL {time.time():.3f} {1e3 * late:.1f} ms", file=sys.stderr, flush=True)

housekeeping.housekeeping_loop = timed_loop
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", default=str(Path(__file__).resolve().parents[3]))
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("serve_args", nargs="*", help="extra `saga serve` flags (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "sitecustomize.py").write_text(SITECUSTOMIZE)
        log = Path(tmp, "proxy.log")
        with proxied(args.tree, "json", args.serve_args, tmp, log) as (url, _, _pid):
            wrk = ["wrk", "-t1", "-c32", "--latency", "-s", str(wrk_script("json")), url]
            subprocess.run([*wrk, "-d1s"], capture_output=True, check=True)
            start = log.stat().st_size
            out = subprocess.run([*wrk, f"-d{args.seconds}s"], capture_output=True, text=True, check=True)
        print("wrk:", " ".join(re.findall(r"^\s+(?:50|99)%\s+\S+$", out.stdout, re.M)))
        with log.open() as f:
            f.seek(start)
            for line in f:
                if line.startswith(("TICK", "STALL")):
                    print(line.rstrip())


if __name__ == "__main__":
    main()
