"""Markdown tables of the h-fleet cells (cell.py's JSON lines): python3 docs/results/grid-saga/fleet/tables.py
prints one table of every probe (session-affinity and `saga`) and one of the final cells (four policies)."""

from __future__ import annotations

import glob
import json
import math
from pathlib import Path

HERE = Path(__file__).parent
SA = "session-affinity"
# session-affinity holds the offered rate: its late arrivals' TCT geomean within 30% of its early ones', and,
# where measured, it finishes >= 95% of what arrives in the second half of the arrival window
MAX_LATE_OVER_EARLY = 1.3
MIN_SECOND_HALF = 0.95
# and the 2x-longer run's bound (session-affinity's TCT over the isolated) within 10% of this run's
MAX_BOUND_GROWTH = 1.1


def holds(sa: dict) -> bool:
    half = sa.get("second_half_ratio")
    return sa["late_over_early"] <= MAX_LATE_OVER_EARLY and (half is None or half >= MIN_SECOND_HALF)


def key(r: dict) -> tuple:
    return (r["profile"], r["replicas"], r["workload"], r["kv_tokens"], r["rate"], r["seed"])


def headroom(speedup: float, bound: float) -> str:
    return f"{math.log(speedup) / math.log(bound):.0%}" if bound >= 1.05 and speedup > 0 else "-"


def bar(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def half_of(sa: dict) -> str:
    half = sa.get("second_half_ratio")
    return "-" if half is None else f"{half:.2f}"


def main() -> None:
    rows = []
    for path in sorted(glob.glob(str(HERE / "*.jsonl"))):
        with open(path) as f:
            rows += [json.loads(line) | {"file": Path(path).name} for line in f]
    by_key: dict[tuple, dict[int, dict]] = {}
    for r in rows:
        by_key.setdefault(key(r), {})[r["tasks"]] = r  # the later line wins (final over probe)

    def doubled(r: dict) -> str:
        twice = by_key[key(r)].get(2 * r["tasks"])
        if twice is None:
            return ""
        sa, saga = twice["policies"][SA], twice["policies"]["saga"]
        steady = holds(sa) and twice["bound"] <= MAX_BOUND_GROWTH * r["bound"]
        verdict = "steady" if steady else "**not steady**"
        return f"{twice['bound']:.2f}x / {saga['speedup_vs_sa']:.2f}x ({verdict})"

    head = "file,fleet,workload,tasks,KV/replica,offered/s,SA done/s,SA 2nd half,SA late/early,SA oversub"
    head += ",SA TCT,saga TCT,saga vs SA,bound,headroom,SA holds,2x tasks: bound / saga"
    print(bar(*head.split(",")))
    print(bar(*(["---"] * 3 + ["---:"] * 12 + ["---"] * 2)))
    for r in rows:
        sa, saga = r["policies"][SA], r["policies"]["saga"]
        print(bar(
            r["file"], f"{r['replicas']} x {r['profile'].removeprefix('llama3-')}", r["workload"],
            str(r["tasks"]),
            f"{r['kv_tokens']:,}", f"{r['rate']:g}", f"{sa['completed_per_s']:.3f}", half_of(sa),
            f"{sa['late_over_early']:.2f}",
            f"{sa['oversub_mean']:.2f}", f"{sa['tct_geomean_s']:.0f} s", f"{saga['tct_geomean_s']:.0f} s",
            f"{saga['speedup_vs_sa']:.2f}x", f"{r['bound']:.2f}x",
            headroom(saga["speedup_vs_sa"], r["bound"]), "yes" if holds(sa) else "no", doubled(r),
        ))  # fmt: skip
    print()
    last = {(key(r), r["tasks"]): r for r in rows if len(r["policies"]) == 4}  # a rerun replaces its cell
    order = {"swe": 0, "webarena": 1, "mixed": 2}
    finals = sorted(
        last.values(), key=lambda r: (r["seed"], -r["kv_tokens"], order[r["workload"]], r["tasks"])
    )
    head = "seed,workload,KV/replica,tasks,offered/s,done/s SA / saga,SA 2nd half,SA late/early,SA oversub,SA"
    head += ",prefix-load,continuum-ttl,saga,saga vs SA,saga vs best other,bound,headroom,SA holds"
    print(bar(*head.split(",")))
    print(bar(*(["---:", "---"] + ["---:"] * 15 + ["---"])))
    for r in finals:
        p = r["policies"]
        sa, saga = p[SA], p["saga"]
        best = min((x for x in p if x != "saga"), key=lambda x: p[x]["tct_geomean_s"])
        print(bar(
            str(r["seed"]), r["workload"], f"{r['kv_tokens']:,}", str(r["tasks"]), f"{r['rate']:g}",
            f"{sa['completed_per_s']:.3f} / {saga['completed_per_s']:.3f}", half_of(sa),
            f"{sa['late_over_early']:.2f}", f"{sa['oversub_mean']:.2f}", f"{sa['tct_geomean_s']:.0f} s",
            f"{p['prefix-load']['tct_geomean_s']:.0f} s", f"{p['continuum-ttl']['tct_geomean_s']:.0f} s",
            f"{saga['tct_geomean_s']:.0f} s", f"{saga['speedup_vs_sa']:.2f}x",
            f"{p[best]['tct_geomean_s'] / saga['tct_geomean_s']:.2f}x ({best})", f"{r['bound']:.2f}x",
            headroom(saga["speedup_vs_sa"], r["bound"]), "yes" if holds(sa) else "no",
        ))  # fmt: skip

    print()
    print(
        bar(
            "seed",
            "KV/replica",
            "run",
            "saga vs SA (geomean of 3)",
            "bound (geomean of 3)",
            "saga vs best other",
        )
    )
    print(bar("---:", "---:", "---", "---:", "---:", "---:"))
    groups: dict[tuple, list[dict]] = {}
    for r in finals:
        groups.setdefault((r["seed"], r["kv_tokens"]), []).append(r)
    for (seed, kv), cells in groups.items():
        for run in ("N", "2N"):
            by_w: dict[str, dict] = {}
            for r in sorted(cells, key=lambda r: r["tasks"], reverse=run == "N"):
                by_w[r["workload"]] = r  # the smallest (N) or largest (2N) run per workload
            if len(by_w) < 3 or len({r["tasks"] for r in cells}) < 2:
                continue
            picked = list(by_w.values())
            gm = lambda xs: math.exp(sum(math.log(x) for x in xs) / len(xs))  # noqa: E731
            sp = gm([r["policies"]["saga"]["speedup_vs_sa"] for r in picked])
            bd = gm([r["bound"] for r in picked])
            vb = gm([
                min(r["policies"][x]["tct_geomean_s"] for x in r["policies"] if x != "saga")
                / r["policies"]["saga"]["tct_geomean_s"]
                for r in picked
            ])  # fmt: skip
            tasks = ", ".join(f"{w} {r['tasks']}" for w, r in sorted(by_w.items(), key=lambda x: order[x[0]]))
            print(bar(str(seed), f"{kv:,}", f"{run} ({tasks})", f"{sp:.2f}x", f"{bd:.2f}x", f"{vb:.2f}x"))


if __name__ == "__main__":
    main()
