"""`saga` with a bound on how long a new workflow waits for KV (`admission.max_wait_s`), on one DES cell (an
experiment, not a policy):

    python3 docs/results/saga-v22/wait_bound.py VARIANT... -- SAGA_BENCH_DES_ARGS...

VARIANT: `saga` (since this experiment the preset bounds the wait at 300 s), `wnone` (the preset without a
bound: what `saga` was when the experiment ran) or `wN` (the preset with `max_wait_s` N seconds). Prints, for
each variant, how many first calls waited in admission at all and how many were admitted past the bound (room
or not). Run it with SAGA_PURE_PYTHON=1 (the counts wrap methods of the admission). The sweep's cells:
grid_cells.py beside it; the nine declared cells: the loop in README.md.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "saga-v16"))
from explore import ADMISSION, run

from proxy.scheduler import admission

BOUNDS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)
VARIANTS = {f"w{b:g}": {"admission": msgspec.structs.replace(ADMISSION, max_wait_s=b)} for b in BOUNDS}
VARIANTS["wnone"] = {"admission": msgspec.structs.replace(ADMISSION, max_wait_s=None)}
OVERDUE: Counter[float | None] = Counter()
WAITED: Counter[float | None] = Counter()
_admit_overdue = admission.WorkflowAdmission.admit_overdue
_wait = admission.WorkflowAdmission.wait


def _counted(self: admission.WorkflowAdmission, req: object, replica_id: str) -> None:
    OVERDUE[self.spec.max_wait_s] += 1
    _admit_overdue(self, req, replica_id)  # type: ignore[arg-type]


def _counted_wait(
    self: admission.WorkflowAdmission, req: object, now: float, rank: float | None = None
) -> bool:
    WAITED[self.spec.max_wait_s] += 1
    return _wait(self, req, now, rank)  # type: ignore[arg-type]


if __name__ == "__main__":
    admission.WorkflowAdmission.admit_overdue = _counted  # type: ignore[method-assign]
    admission.WorkflowAdmission.wait = _counted_wait  # type: ignore[method-assign]
    code = run(VARIANTS, sys.argv[1:])
    print("waited for KV, by max_wait_s:", dict(WAITED))
    print("admitted past the bound, by max_wait_s:", dict(OVERDUE))
    sys.exit(code)
