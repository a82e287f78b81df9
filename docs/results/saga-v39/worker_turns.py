"""Workers taking turns at admission (proxy/scheduler/core.py `_owes_a_turn`), in the discrete-event cluster:
`python3 docs/results/saga-v39/worker_turns.py [CASES]` runs 4 worker cores synced every 15 ms with what their
predictors learn (loadtests/bench/shared_view_des.py), with and without turns, and one core, per case; prints
each run's mean and p90 task time (virtual seconds) and completed tasks."""

from __future__ import annotations

import sys

from loadtests.bench.shared_view_des import run

cases = (
    sys.argv[1] if len(sys.argv) > 1 else "tight-saga-open,swe-saga-kv-short,swe-saga-kv-short-160"
).split(",")
for case in cases:
    for label, workers, turns in (
        ("one core", 1, True),
        ("4 workers", 4, False),
        ("4 workers, turns", 4, True),
    ):
        result, wall = run(case, workers, 0.015 if workers > 1 else None, False, workers > 1, False, turns)
        s = result.summary()
        print(
            f"{case:<24} {label:<18} mean {s.tct_mean_s:7.1f} s  p90 {s.tct_p90_s:7.1f} s  "
            f"tasks {s.tasks} failed {s.failed} duration {result.duration_s:.0f} s  ({wall:.0f} s wall)",
            flush=True,
        )
