"""Which functions the slowest `saga` request_arrived / request_finished calls of `saga bench core` spend
their time in (docs/results/core-cost.md, after round 6).

Run from the repository root: `SAGA_PURE_PYTHON=1 python3 docs/results/core-cost-tools/slow_calls.py 100000`
(the argument N: a call whose profiled time exceeds 3 x N ns counts as slow, ~N ns unprofiled).
"""

import cProfile
import io
import pstats
import sys
import time

import proxy.scheduler.core as core_mod
from loadtests.bench import core as bench

orig_arrived = core_mod.SchedulerCore.request_arrived
orig_finished = core_mod.SchedulerCore.request_finished
counts = {"arrived": [0, 0], "finished": [0, 0]}
THRESH_NS = int(sys.argv[1]) if len(sys.argv) > 1 else 35_000


def wrap(kind, orig):
    def f(self, *a, **k):
        prof = cProfile.Profile()
        t = time.thread_time_ns()
        prof.enable()
        r = orig(self, *a, **k)
        prof.disable()
        dt = time.thread_time_ns() - t
        counts[kind][0] += 1
        if dt > THRESH_NS * 3:  # profiled calls are ~3x slower
            counts[kind][1] += 1
            stats_acc[kind].append(prof)
        return r

    return f


stats_acc = {"arrived": [], "finished": []}
core_mod.SchedulerCore.request_arrived = wrap("arrived", orig_arrived)
core_mod.SchedulerCore.request_finished = wrap("finished", orig_finished)
bench.bench_core("saga", queue=False, replicas=64, sessions=10000, calls=20000, warmup=10000, in_flight=256)
for kind in ("arrived", "finished"):
    print(kind, "calls", counts[kind][0], "slow", counts[kind][1])
    if stats_acc[kind]:
        s = io.StringIO()
        st = pstats.Stats(stats_acc[kind][0], stream=s)
        for p in stats_acc[kind][1:]:
            st.add(p)
        st.sort_stats("cumulative").print_stats(18)
        print(s.getvalue()[:3500])
