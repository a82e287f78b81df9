"""What a long run of calls leaves behind, and what the cyclic GC spends on it (core-cost.md round 6).

`python -m loadtests.bench.core_bench_state [--policy P] [--calls N]` sends N whole-answer calls through
call_cost's in-process harness in one go (the same body every time: call_cost's pattern of sessions, a new
inferred one every other call, nothing calling `tick`), letting the event loop turn every 64 calls as a
live server's does between reads (uvloop frees cancelled timers only then). It prints the CPU per call, the
time and count of the GC's collections by generation (`gc.callbacks`), the GC-tracked objects left per call,
and the sizes of the core's tables. Compare runs side by side only (the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from typing import Any

from loadtests.bench import call_cost
from proxy.context import CORE


async def measure(policy: str, calls: int) -> dict[str, Any]:
    request, answer = call_cost.request_bytes(False), call_cost.answer_segments(False, "one")
    spent = [0.0, 0.0, 0.0]
    count = [0, 0, 0]
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            spent[info["generation"]] += time.perf_counter() - started[0]
            count[info["generation"]] += 1

    with call_cost.harness_like_serve(policy) as harness:
        for _ in range(200):  # warm up
            await harness.call(request, answer, call_cost._ANSWER)
        gc.collect()
        tracked = len(gc.get_objects())
        gc.callbacks.append(on_gc)
        try:
            start = time.process_time()
            for i in range(calls):
                await harness.call(request, answer, call_cost._ANSWER)
                if i % 64 == 0:
                    await asyncio.sleep(0)
            cpu_s = time.process_time() - start
        finally:
            gc.callbacks.remove(on_gc)
        gc.collect()
        left = len(gc.get_objects()) - tracked
        core = harness.app[CORE]
        admission = core.admission
    return {
        "policy": policy,
        "calls": calls,
        "cpu_us_per_call": round(cpu_s / calls * 1e6, 1),
        "gc_ms_by_generation": [round(s * 1e3, 1) for s in spent],
        "gc_collections_by_generation": count,
        "tracked_objects_left_per_call": round(left / calls, 2),
        "sessions": len(core.sessions),
        "workflows": len(admission.workflows) if admission is not None else 0,
        "lapse_heap": len(admission._lapses) if admission is not None else 0,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", default="saga")
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args(argv)
    print(call_cost.run_on_uvloop(lambda: measure(args.policy, args.calls)))


if __name__ == "__main__":
    main()
