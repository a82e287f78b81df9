"""`saga bench des` with four more contenders, `saga-oc0.6` ... `saga-oc1.25`: the `saga` preset with
admission's `overcommit` set to that value (the preset's is 1.5). Run with `--jobs 1`: process-pool workers
do not see the added names. Usage: `python3 docs/results/saga-v28/overcommit.py bench des ... --policies
saga,saga-oc0.8`."""

from __future__ import annotations

import sys

import msgspec

from loadtests.bench import ablation
from proxy.cli import main

for overcommit in (0.6, 0.8, 1.0, 1.25):
    admission = msgspec.structs.replace(ablation._SAGA.admission, overcommit=overcommit)
    ablation.ABLATIONS[f"saga-oc{overcommit}"] = {"admission": admission}

if __name__ == "__main__":
    sys.argv = ["saga", *sys.argv[1:]]
    main()
