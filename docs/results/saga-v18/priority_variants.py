"""vLLM priority variants of the `saga` preset on one DES cell (an experiment, not a policy).

    PYTHONPATH=. SAGA_PURE_PYTHON=1 python3 docs/results/saga-v18/priority_variants.py VARIANT... -- ARGS...

Needs remaining-work.patch (beside this file) applied: it adds the `remaining-work` priority mode. Each
VARIANT is a name below (registered as `x-NAME` beside the ablations) or any policy `saga bench des` knows.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "saga-v16"))
from explore import run  # the sixteenth session's runner, beside it

VARIANTS: dict[str, dict[str, Any]] = {
    "rw0.5": {"prioritize": "remaining-work", "priority_work_weight": 0.5},
    "rw1": {"prioritize": "remaining-work", "priority_work_weight": 1.0},
    "rw2": {"prioritize": "remaining-work", "priority_work_weight": 2.0},
}

if __name__ == "__main__":
    sys.exit(run(VARIANTS, sys.argv[1:]))
