"""`saga bench des` with `saga-cpulapse`: the `saga` preset whose admission lets a workflow's reservation
lapse between calls on a replica with a CPU KV tier. Needs cpu-tier-lapse.patch (beside this file) applied to
a worktree of main at 5216d7b (`git apply`), its modules built there (`python3 setup.py build_ext --inplace`);
run from that worktree with `--jobs 1`. Tried on 2026-12-05 and not merged (docs/results/saga.md)."""

from __future__ import annotations

import sys

import msgspec

from loadtests.bench import ablation
from proxy.cli import main

ablation.ABLATIONS["saga-cpulapse"] = {
    "admission": msgspec.structs.replace(ablation._SAGA.admission, cpu_tier_lapse=True)
}

if __name__ == "__main__":
    sys.argv = ["saga", *sys.argv[1:]]
    main()
