"""The cyclic GC's collections under a flood of one-call sessions, in process (thirty-sixth session,
docs/results/overhead.md).

    python3 docs/results/overhead-s36/young_gc.py [--calls N] [--tree DIR]

Drives `loadtests/bench/call_cost.py`'s harness (the fast server and the upstream pool through their
callbacks, `saga serve`'s start-up heap frozen) with one-line calls naming no session, runs the scheduler's
housekeeping tick once a second as proxy/housekeeping.py does (in steps), and times every collection of the
cyclic GC (`gc.callbacks`). Prints, per generation, how many collections ran and how long they took (the
median and the longest), and how many tracked objects the young generations held at the end, and of what
kind the most of them were.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections import Counter
from pathlib import Path


def _kind(o: object) -> str:
    """A tracked object's type; a tuple's with its items' types, e.g. `(tuple, int)`."""
    if type(o) is tuple:
        return "(" + ", ".join(type(item).__name__ for item in o) + ")"
    return type(o).__name__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=450_000)
    parser.add_argument("--tree", default=str(Path(__file__).resolve().parents[3]))
    args = parser.parse_args()
    sys.path.insert(0, args.tree)
    from loadtests.bench.call_cost import (
        _ANSWER,
        answer_segments,
        harness_like_serve,
        request_bytes,
        run_on_uvloop,
    )
    from proxy.context import CORE
    from proxy.housekeeping import LAPSES_PER_STEP
    from proxy.server import freeze_start_up_heap

    spent: dict[int, list[float]] = {0: [], 1: [], 2: []}
    started = [0.0]

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            spent[info["generation"]].append((time.perf_counter() - started[0]) * 1e3)

    async def flood() -> None:
        request, answer = request_bytes(False, "plain"), answer_segments(False, "one")
        with harness_like_serve("saga") as harness:
            core = harness.app[CORE]
            freeze_start_up_heap()
            gc.callbacks.append(timed)
            next_tick = time.monotonic() + 1
            for _ in range(args.calls):
                await harness.call(request, answer, _ANSWER)
                if time.monotonic() >= next_tick:
                    next_tick += 1
                    core.tick(LAPSES_PER_STEP)
                    while core.ticking():
                        core.tick_more(LAPSES_PER_STEP)
            gc.callbacks.remove(timed)
            young = gc.get_objects(0) + gc.get_objects(1)
            print(f"{args.tree}: {args.calls} calls; young tracked objects at the end: {len(young)}")
            kinds = Counter(_kind(o) for o in young).most_common(3)
            print("  the most of them:", ", ".join(f"{kind} x{n}" for kind, n in kinds))

    run_on_uvloop(flood)
    for generation, times in spent.items():
        if times:
            median, longest, over = statistics.median(times), max(times), sum(t > 1 for t in times)
            print(
                f"  generation {generation}: {len(times)} collections, median {median:.2f} ms, "
                f"longest {longest:.2f} ms, over 1 ms: {over}"
            )


if __name__ == "__main__":
    main()
