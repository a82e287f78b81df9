"""`saga bench fairness`, counting the calls that waited in `saga`'s admission and those admitted past
`admission.max_wait_s`, by tenant (an experiment, not project code). Run with SAGA_PURE_PYTHON=1 (the counts
wrap methods of the admission):

    python3 docs/results/saga-v23/fair_wait.py [--no-bound] SAGA_BENCH_FAIRNESS_ARGS...

`--no-bound`: `take_overdue` finds nothing, as the preset without a bound.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

from proxy.cli import main
from proxy.scheduler import admission

COUNTS: Counter[str] = Counter()
Admission = admission.WorkflowAdmission
_wait, _admit_overdue = Admission.wait, Admission.admit_overdue


def _counted_wait(self: Any, req: Any, now: float, rank: float | None = None) -> bool:
    COUNTS[f"waited:{req.tenant_id}"] += 1
    return _wait(self, req, now, rank)


def _counted_overdue(self: Any, req: Any, replica_id: str) -> None:
    COUNTS[f"overdue:{req.tenant_id}"] += 1
    _admit_overdue(self, req, replica_id)


if __name__ == "__main__":
    Admission.wait = _counted_wait  # type: ignore[method-assign]
    Admission.admit_overdue = _counted_overdue  # type: ignore[method-assign]
    argv = sys.argv[1:]
    if "--no-bound" in argv:
        argv.remove("--no-bound")
        Admission.take_overdue = lambda self, now: None  # type: ignore[method-assign]
    code = main(["bench", "fairness", *argv])
    print("counts:", dict(COUNTS))
    sys.exit(code)
