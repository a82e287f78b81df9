"""Admission settings other than the `saga` preset's, on one DES cell (an experiment, not a policy).

    python3 docs/results/saga-v16/explore.py VARIANT... -- SAGA_BENCH_DES_ARGS...

Each VARIANT is a name below (the preset with one or two admission fields changed, registered as `x-NAME`
beside the ablations of loadtests/bench/ablation.py) or any policy `saga bench des` knows; the arguments
after `--` are `saga bench des`'s (workload, tasks, replicas, profile, KV scale, rate, seed, --json).
Keep `--jobs 1`: worker processes would not see the variants. The nine declared cells and the loop over
them: cells.txt and run_cells.sh beside this file.
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec

from loadtests.bench import ablation
from proxy.cli import main

ADMISSION = ablation._SAGA.admission
assert ADMISSION is not None


def _admission(**fields: Any) -> dict[str, Any]:
    return {"admission": msgspec.structs.replace(ADMISSION, **fields)}


VARIANTS: dict[str, dict[str, Any]] = {
    "oc1.0": _admission(overcommit=1.0),
    "h2": _admission(horizon_calls=2.0),
    "h1.5": _admission(horizon_calls=1.5),
    "h2oc1.25": _admission(horizon_calls=2.0, overcommit=1.25),
}


def run(variants: dict[str, dict[str, Any]], argv: list[str]) -> int:
    """`saga bench des` with the named `variants` registered as `x-NAME` (argv: VARIANT... -- ARGS...)."""
    split = argv.index("--")
    names = argv[:split]
    for name in names:
        if name in variants:
            ablation.ABLATIONS["x-" + name] = variants[name]
    policies = ",".join("x-" + n if n in variants else n for n in names)
    return main(["bench", "des", *argv[split + 1 :], "--policies", policies])


if __name__ == "__main__":
    sys.exit(run(VARIANTS, sys.argv[1:]))
