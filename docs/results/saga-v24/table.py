"""Print the interactive tenant's SLO attainment, its p99 slowdown and the batch tenant's mean slowdown and
makespan from the fairness JSONs given (an experiment's table)."""

from __future__ import annotations

import json
import sys

for path in sys.argv[1:]:
    with open(path) as f:
        run = json.load(f)
    afs = next(c for c in run["contenders"] if c["name"] == "afs")
    inter, batch = afs["tenants"]
    print(
        f"{path.rsplit('/', 1)[-1]:36s} SLO {inter['slo_attainment']:6.1%}  p99 {inter['slowdown_p99']:.2f}  "
        f"batch slowdown {batch['slowdown_mean']:.3f} (p99 {batch['slowdown_p99']:.2f})  "
        f"batch tasks/s {batch['window_tasks_per_s']:.3f}  "
        f"failed {inter['failed'] + batch['failed']}  "
        f"makespan {afs['makespan_s']:.0f}  invariant {afs['invariant_held']}"
    )
