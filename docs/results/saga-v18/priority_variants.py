"""vLLM priority variants of the `saga` preset on one DES cell (an experiment, not a policy).

    SAGA_PURE_PYTHON=1 python3 docs/results/saga-v18/priority_variants.py VARIANT... -- SAGA_BENCH_DES_ARGS...

Needs remaining-work.patch (beside this file) applied: it adds the `remaining-work` priority mode. Each
VARIANT is a name below (registered as `x-NAME` beside the ablations) or any policy `saga bench des` knows.
"""

from __future__ import annotations

import sys
from typing import Any

from loadtests.bench import ablation
from proxy.cli import main

VARIANTS: dict[str, dict[str, Any]] = {
    "rw0.5": {"prioritize": "remaining-work", "priority_work_weight": 0.5},
    "rw1": {"prioritize": "remaining-work", "priority_work_weight": 1.0},
    "rw2": {"prioritize": "remaining-work", "priority_work_weight": 2.0},
}

if __name__ == "__main__":
    split = sys.argv.index("--")
    names = sys.argv[1:split]
    for name in names:
        if name in VARIANTS:
            ablation.ABLATIONS["x-" + name] = VARIANTS[name]
    policies = ",".join("x-" + n if n in VARIANTS else n for n in names)
    sys.exit(main(["bench", "des", *sys.argv[split + 1 :], "--policies", policies]))
