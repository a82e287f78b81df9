"""An experiment, not a policy: `saga bench fairness` where a waiting workflow of the interactive tenant is
admitted past the room (as `admission.max_wait_s` admits) once it waited X seconds. Run with
SAGA_PURE_PYTHON=1 (it wraps a method of the admission):

    python3 docs/results/saga-v23/slo_admit.py X SAGA_BENCH_FAIRNESS_ARGS...
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

from proxy.cli import main
from proxy.scheduler import admission

Admission = admission.WorkflowAdmission
_take_overdue = Admission.take_overdue
COUNTS: Counter[str] = Counter()


def _take_overdue_or_slo(self: Any, now: float, wait_s: float) -> Any:
    req = _take_overdue(self, now)
    if req is not None:
        return req
    for arrived, request_id in self._arrivals:  # oldest first
        if arrived + wait_s > now:
            break
        held = self.waiting._held.get(request_id)
        if held is not None and held.item.tenant_id == "interactive":
            req = self.waiting.remove(request_id)
            self._unwait(req)
            COUNTS["admitted for the SLO"] += 1
            return req
    return None


if __name__ == "__main__":
    wait_s = float(sys.argv[1])
    Admission.take_overdue = lambda self, now: _take_overdue_or_slo(self, now, wait_s)  # type: ignore[method-assign]
    code = main(["bench", "fairness", *sys.argv[2:]])
    print("counts:", dict(COUNTS))
    sys.exit(code)
