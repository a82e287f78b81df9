"""`saga bench des` with `saga-oc2.0`, `saga-oc3.0` and `saga-oc5.0`: the `saga` preset with admission's
`overcommit` at that value (the preset's is 1.5), for the offload cells (thirty-seventh session,
docs/results/saga.md). Run with `--jobs 1`: process-pool workers do not see the added names. Usage: `python3
docs/results/saga-v37/overcommit_offload.py bench des ... --kv-offload-gib 64 --policies saga,saga-oc2.0`."""

from __future__ import annotations

import sys

import msgspec

from loadtests.bench import ablation
from proxy.cli import main

for overcommit in (2.0, 3.0, 5.0):
    admission = msgspec.structs.replace(ablation._SAGA.admission, overcommit=overcommit)
    ablation.ABLATIONS[f"saga-oc{overcommit}"] = {"admission": admission}

if __name__ == "__main__":
    sys.argv = ["saga", *sys.argv[1:]]
    main()
