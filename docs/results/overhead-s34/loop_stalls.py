"""Where the anonymous load's p99 comes from: how long the event loop stalls, and how long each housekeeping
tick takes (thirty-fourth session, docs/results/overhead.md).

    python3 docs/results/overhead-s34/loop_stalls.py [--tree DIR] [--seconds S] [--rounds N --pause P]
        [-- saga serve flags]

Starts nginx and `saga serve` from `--tree` as docs/results/overhead-s33/flood.py does, with a `sitecustomize`
on the proxy's path that (1) runs the housekeeping loop as proxy/housekeeping.py does (in steps where the
core has `ticking`) with each tick's longest step timed, and (2) starts a watchdog task that sleeps 2 ms and
reports each wake-up more than 4 ms late (a turn of the loop that long).
Drives it with wrk (1 thread, 32 connections, one-line calls naming no session) and prints wrk's p50/p99,
then each tick's time and each stall, from the proxy's log. The watchdog's own wake-ups cost some CPU: read
the stalls, not the throughput. `--no-gc`: the proxy runs with the cyclic GC disabled. `--rounds N --pause P`
(thirty-fifth session): N rounds of wrk with P seconds between them, as `saga bench overhead` leaves the
proxy idle while the other targets run (its sessions then go quiet and the predictor ends them), wrk's
quantiles for each round.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "overhead-s33"))
from flood import proxied, wrk_quantiles, wrk_script

SITECUSTOMIZE = """
import asyncio, sys, time
import proxy.housekeeping as housekeeping

async def timed_loop(core, apply, interval_s):
    asyncio.get_running_loop().create_task(watchdog())
    stepped = hasattr(core, "ticking")  # a tick in steps (after the thirty-fourth session's change)
    limit = getattr(housekeeping, "LAPSES_PER_STEP", 0)
    while True:
        await asyncio.sleep(interval_s)
        started = time.perf_counter()
        sessions = len(core.sessions)
        apply(core.tick(limit) if stepped else core.tick())
        longest = time.perf_counter() - started
        steps = 1
        while stepped and core.ticking():
            await asyncio.sleep(0)
            step_started = time.perf_counter()
            apply(core.tick_more(limit))
            longest = max(longest, time.perf_counter() - step_started)
            steps += 1
        print(f"TICK {time.time():.3f} {steps} step(s), the longest {1e3 * longest:.2f} ms, "
              f"sessions {sessions} -> {len(core.sessions)}, "
              f"{1e3 * (time.perf_counter() - started):.2f} ms from its start to its end",
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
    parser.add_argument("--no-gc", action="store_true", help="the proxy with the cyclic GC disabled")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of wrk")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between rounds")
    parser.add_argument("serve_args", nargs="*", help="extra `saga serve` flags (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "sitecustomize.py").write_text(
            SITECUSTOMIZE + ("import gc\ngc.disable()\n" if args.no_gc else "")
        )
        log = Path(tmp, "proxy.log")
        with proxied(args.tree, "json", args.serve_args, tmp, log) as (url, _, _pid):
            wrk = ["wrk", "-t1", "-c32", "--latency", "-s", str(wrk_script("json")), url]
            subprocess.run([*wrk, "-d1s"], capture_output=True, check=True)
            start = log.stat().st_size
            outs = []
            for n in range(args.rounds):
                if n:
                    time.sleep(args.pause)
                print(f"round {n + 1} at {time.time():.3f}")
                outs.append(
                    subprocess.run([*wrk, f"-d{args.seconds}s"], capture_output=True, text=True, check=True)
                )
        for n, out in enumerate(outs):
            print(f"wrk round {n + 1}:", wrk_quantiles(out.stdout))
        with log.open() as f:
            f.seek(start)
            for line in f:
                if line.startswith(("TICK", "STALL")):
                    print(line.rstrip())


if __name__ == "__main__":
    main()
