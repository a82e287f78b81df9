"""The sweep's overloaded cells (4 x llama3-8b-h100, 100 tasks, seed 0: loads 0.95 and 1.1, oversubscription
1.5, 2 and 3, each workload; KV scale and rate as docs/results/grid-saga/full3 ran them), with the preset
without a wait bound (`wnone`: what `saga` was when this ran) and the bounds named on the command line. One
line per cell and variant: TCT geomean, `wnone`'s over it, and how many first calls were admitted past the
bound.

    SAGA_PURE_PYTHON=1 python3 docs/results/saga-v22/grid_cells.py OUT_DIR w60 w120 w300
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import wait_bound

GRID = Path(__file__).resolve().parents[1] / "grid-saga" / "full3"


def main(out: Path, names: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    from proxy.scheduler import admission

    admission.WorkflowAdmission.admit_overdue = wait_bound._counted  # type: ignore[method-assign]
    for workload in ("swe", "webarena", "mixed"):
        grid = json.loads((GRID / f"full-{workload}.json").read_text())["workloads"][0]
        for cell in grid["cells"]:
            if cell["load"] < 0.95 or cell["oversub_target"] < 1.5 or cell["unreachable"]:
                continue
            name = f"{workload}-l{cell['load']:g}-o{cell['oversub_target']:g}"
            wait_bound.OVERDUE.clear()
            path = out / f"{name}.json"
            args = ["--workload", workload, "--tasks", "100", "--replicas", "4"]
            args += ["--profile", "llama3-8b-h100", "--kv-scale", str(cell["kv_scale"])]
            args += ["--arrival-rate", str(cell["rate_per_s"])]
            args += ["--seed", "0", "--jobs", "1", "--json", str(path)]
            wait_bound.run(wait_bound.VARIANTS, ["wnone", *names, "--", *args])
            result = json.loads(path.read_text())["policies"]
            base = result["x-wnone"]["tct_geomean_s"]
            for policy, row in result.items():
                bound = float(policy[3:]) if policy.startswith("x-w") else None
                line = (
                    f"RESULT {name} {policy} tct_geomean={row['tct_geomean_s']:.1f} "
                    f"ratio={base / row['tct_geomean_s']:.3f} failed={row['failed']} "
                    f"overdue={wait_bound.OVERDUE[bound] if bound else '-'}"
                )
                print(line, flush=True)
                with (out / "summary.txt").open("a") as f:
                    f.write(line + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
