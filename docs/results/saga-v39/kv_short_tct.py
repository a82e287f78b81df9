"""The DES fingerprint case `swe-saga-kv-short` (loadtests/des/fingerprint.py: 40 swe tasks on 4 replicas at a
quarter of the KV, where some calls pass the model's context and are refused): its tasks' TCT geomean and
mean, and the refused calls. `PYTHONPATH=TREE SAGA_PURE_PYTHON=1 python3 kv_short_tct.py LABEL` runs TREE's
cluster (e.g. a `git archive` of an earlier commit beside this checkout's)."""

from __future__ import annotations

import math
import sys

import msgspec

from loadtests.des.cluster import Cluster
from loadtests.des.fingerprint import CASES

make_tasks, config = CASES["swe-saga-kv-short"]
result = msgspec.to_builtins(Cluster(make_tasks(), config).run())
tasks = result["tasks"]
tct = [t["finished_s"] - t["started_s"] for t in tasks if t["finished_s"] is not None]
refused = sum(1 for t in tasks for c in t["calls"] if c["error"])
geomean = math.exp(sum(map(math.log, tct)) / len(tct))
print(
    f"{sys.argv[1] if len(sys.argv) > 1 else ''}: {len(tct)} of {len(tasks)} tasks done, "
    f"TCT geomean {geomean:.2f} s, mean {sum(tct) / len(tct):.2f} s, {refused} calls refused"
)
