"""Highest rate one policy holds (h-capacity, docs/results/saga.md "Capacity at equal KV, three seeds").

Walks a grid of --step tasks/s from --start: up while the policy holds, down while it does not, and stops at
the first pair (highest rate that holds, the next one up that does not). Each rate is one run of
../fleet/cell.py with only this policy (--no-reference), appended to --out. "Holds" is the fleet section's
criterion: second-half ratio >= 0.95 and late/early <= 1.3. Rates already in --out for the same cell are
reused, not rerun.
python3 docs/results/grid-saga/capacity/bisect.py --workload swe --kv-scale 0.35 --seed 1 --tasks 640 \
  --policy saga --start 0.07 --out docs/results/grid-saga/capacity/swe.jsonl
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CELL = Path(__file__).resolve().parents[1] / "fleet" / "cell.py"


def holds(v: dict[str, float | None]) -> bool:
    half, le = v["second_half_ratio"], v["late_over_early"]
    return half is not None and le is not None and half >= 0.95 and le <= 1.3


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--workload", required=True)
    p.add_argument("--kv-scale", type=float, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--tasks", type=int, required=True)
    p.add_argument("--policy", required=True)
    p.add_argument("--start", type=float, required=True)
    p.add_argument("--step", type=float, default=0.01)
    p.add_argument("--max-runs", type=int, default=5)
    p.add_argument("--out", required=True)
    a = p.parse_args()

    def key(r: dict[str, object]) -> tuple[object, ...]:
        scale, rate = round(float(str(r["kv_scale"])), 6), round(float(str(r["rate"])), 6)
        return (r["workload"], r["seed"], r["tasks"], scale, rate)

    def run(rate: float) -> bool:
        want = (a.workload, a.seed, a.tasks, round(a.kv_scale, 6), round(rate, 6))
        out = Path(a.out)
        for line in out.read_text().splitlines() if out.exists() else []:
            r = json.loads(line)
            if key(r) == want and a.policy in r["policies"]:
                return holds(r["policies"][a.policy])
        subprocess.run(
            [sys.executable, str(CELL), "--workload", a.workload, "--tasks", str(a.tasks),
             "--rate", f"{rate:.4g}", "--kv-scale", str(a.kv_scale), "--seed", str(a.seed),
             "--policies", a.policy, "--no-reference",
             "--label", f"cap-{a.policy}", "--out", a.out],
            check=True,
        )  # fmt: skip
        last = json.loads(Path(a.out).read_text().splitlines()[-1])
        return holds(last["policies"][a.policy])

    rate = round(a.start, 6)
    held: dict[float, bool] = {}
    for _ in range(a.max_runs):
        held[rate] = run(rate)
        up = round(rate + a.step, 6)
        down = round(rate - a.step, 6)
        if (held[rate] and held.get(up) is False) or (not held[rate] and held.get(down) is True):
            break
        rate = up if held[rate] else down
        if rate <= 0:
            break
    best = max((r for r, h in held.items() if h), default=None)
    print(f"RESULT {a.workload} kv={a.kv_scale} seed={a.seed} n={a.tasks} {a.policy}: holds {best} "
          f"runs {sorted(held.items())}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
