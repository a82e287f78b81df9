"""The guard cells of brief `floor` (issue 11), one `saga` variant at a time: TCT geomean per cell.

Usage (from the tree's root): `PYTHONPATH=. python3 docs/results/grid-saga/floor/guard.py VARIANT [CELL ...]`.
VARIANT is a `saga bench des` policy name (a preset or an ablation) or one of `VARIANTS` below; CELL names
default to every guard cell. Prints one line per cell and appends it as JSON to floor/runs.jsonl.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from loadtests.bench.ablation import policy_for
from loadtests.des.cluster import run_cluster
from loadtests.workloads.catalog import generate, with_poisson_arrivals
from proxy.scheduler import PRESETS, PolicySpec
from proxy.scheduler.registry import PluginSpec

HERE = Path(__file__).resolve().parent
_8B = {"replicas": 4, "tasks": 100, "profile": "llama3-8b-h100"}
_70B = {"replicas": 16, "tasks": 160, "profile": "llama3-70b-tp4-a100"}
# name -> workload, KV scale, arrival rate (None: closed loop), cluster
CELLS: dict[str, tuple[str, float, float | None, dict[str, Any]]] = {
    "wa-0.3-floor": ("webarena", 0.060972377232142855, 0.32895421260585833, _8B),
    "wa-0.3-1.5": ("webarena", 0.08969653997484325, 0.32895421260585833, _8B),
    "swe-0.85-1.5": ("swe", 0.2771182105654762, 0.030289558827434965, _8B),
    "wa-0.85-1.5": ("webarena", 0.15836592642067016, 0.9320369357165986, _8B),
    "mixed-0.85-1.5": ("mixed", 0.29398018973214285, 0.05031862223817882, _8B),
    "70b-swe": ("swe", 0.2638847066742242, 0.07833253756865607, _70B),
    "70b-wa": ("webarena", 0.060237175853762225, 1.2574545763070248, _70B),
    "70b-mixed": ("mixed", 0.281602044069718, 0.060635137542301924, _70B),
    "interactive": ("interactive", 0.3, None, {"replicas": 4, "tasks": 40, "profile": "llama3-8b-h100"}),
}

_SAGA = PRESETS["saga"]
assert _SAGA.retention is not None and _SAGA.admission is not None


def _retention(**params: Any) -> PolicySpec:
    assert _SAGA.retention is not None
    spec = PluginSpec(_SAGA.retention.type, params={**_SAGA.retention.params, **params})
    return msgspec.structs.replace(_SAGA, retention=spec)


def _admission(**fields: Any) -> PolicySpec:
    assert _SAGA.admission is not None
    return msgspec.structs.replace(_SAGA, admission=msgspec.structs.replace(_SAGA.admission, **fields))


def _both(retention: dict[str, Any], admission: dict[str, Any]) -> PolicySpec:
    spec = _retention(**retention)
    assert spec.admission is not None
    return msgspec.structs.replace(spec, admission=msgspec.structs.replace(spec.admission, **admission))


VARIANTS: dict[str, Any] = {
    # probes (existing switches): the admission's hold between calls, and the retention's priority
    "hold-0": lambda: _admission(max_hold_s=0.01),
    "hold-0-noret": lambda: msgspec.structs.replace(_admission(max_hold_s=0.01), retention=None),
    "soft-retention": lambda: _retention(priority_base_s=1.0),
    # perturbations that change nothing of substance: how chaotic a cell is
    "hold-q-0.98": lambda: _admission(hold_quantile=0.98),
    "overcommit-1.49": lambda: _admission(overcommit=1.49),
    "max-hold-119": lambda: _admission(max_hold_s=119.0),
    # the cost-aware hold (admission.hold_price); `price-P` alone: the gap cap at 5 s (the default then)
    **{
        f"price-{p}": (lambda p=p: _admission(hold_price=p, price_max_gap_s=5.0))
        for p in (0.5, 0.7, 0.8, 1.0, 1.5, 2.0)
    },
    **{
        f"price-{p}-gap-2": (lambda p=p: _admission(hold_price=p, price_max_gap_s=2.0))
        for p in (1.0, 1.5, 2.0)
    },
    **{
        f"price-{p}-gap-5": (lambda p=p: _admission(hold_price=p, price_max_gap_s=5.0))
        for p in (1.0, 1.5, 2.0)
    },
    # the preset before this change (the same as `saga` at main c90f915)
    "saga-without-price": lambda: _admission(hold_price=None),
    **{f"price-{p}-any-gap": (lambda p=p: _admission(hold_price=p, price_max_gap_s=1e9)) for p in (0.7, 1.0)},
    "soft-retention-hold-0": lambda: _both({"priority_base_s": 1.0}, {"max_hold_s": 0.01}),
}


def variant(name: str) -> str | PolicySpec:
    if name in VARIANTS:
        made = VARIANTS[name]
        return made() if callable(made) else made
    return policy_for(name)


def run(name: str, cell: str, seed: int = 0) -> dict[str, Any]:
    """One variant on one cell; `seed` (not 0: a robustness check) draws other tasks and arrivals."""
    workload, kv_scale, rate, cluster = CELLS[cell]
    tasks = generate(workload, cluster["tasks"], seed=seed)
    options: dict[str, Any] = {}
    if rate is not None:
        tasks = with_poisson_arrivals(tasks, rate, seed=seed)
    else:
        options["concurrency"] = 16
    cpu = time.process_time()
    result = run_cluster(
        tasks,
        replicas=cluster["replicas"],
        profile=cluster["profile"],
        policy=variant(name),
        seed=seed,
        kv_scale=kv_scale,
        **options,
    )
    times = [r.completion_time_s for r in result.tasks if not r.failed]
    kv = result.kv_figures()
    return {
        "variant": name,
        "cell": cell,
        "seed": seed,
        "tct_geomean_s": round(statistics.geometric_mean(times), 2),
        "failed": sum(r.failed for r in result.tasks),
        "wasted_retention_block_s": round(kv.retained_block_s_wasted),
        "cpu_s": round(time.process_time() - cpu, 1),
        "utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "commit": _commit(),
    }


def _commit() -> str:
    """The tree's commit, with `+dirty` when the policy code differs from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE)
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", ":/proxy", ":/predictor"], cwd=HERE)
    return head.stdout.strip() + ("+dirty" if dirty.returncode else "")


def main(argv: list[str]) -> None:
    name, cells = argv[0], argv[1:] or list(CELLS)
    seeds = [int(s) for s in os.environ.get("SEEDS", "0").split(",")]
    with (HERE / "runs.jsonl").open("a") as out:
        for cell, seed in ((c, s) for c in cells for s in seeds):
            row = run(name, cell, seed)
            wasted = row["wasted_retention_block_s"]
            print(
                f"{name:28s} {cell:16s} s{seed} {row['tct_geomean_s']:8.1f} s  wasted {wasted:>12,} block-s"
                f"  ({row['cpu_s']} s cpu)",
                flush=True,
            )
            out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
