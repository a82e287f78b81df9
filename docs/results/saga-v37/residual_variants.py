"""vLLM priority by expected remaining work from the mean residual life (an experiment, not a policy).

    PYTHONPATH=. SAGA_PURE_PYTHON=1 python3 docs/results/saga-v37/residual_variants.py VARIANT... -- ARGS...

Needs residual-work.patch (beside this file) applied. Each VARIANT is a name below (registered as `x-NAME`)
or any policy `saga bench des` knows; ARGS are `saga bench des`'s.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "saga-v16"))
from explore import run  # the sixteenth session's runner

VARIANTS: dict[str, dict[str, Any]] = {
    f"res{w:g}": {"prioritize": "remaining-work", "priority_work_weight": w, "priority_residual": True}
    for w in (0.5, 1.0, 2.0, 4.0)
}

if __name__ == "__main__":
    sys.exit(run(VARIANTS, sys.argv[1:]))
