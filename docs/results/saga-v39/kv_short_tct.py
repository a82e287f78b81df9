"""The DES fingerprint case `swe-saga-kv-short` (loadtests/des/fingerprint.py: 40 swe tasks on 4 replicas at a
quarter of the KV, where some calls pass the model's context and are refused): its `summary()` (TCT over the
tasks that did not fail, and how many failed, with why). `PYTHONPATH=TREE python3 kv_short_tct.py LABEL` runs
TREE's cluster (e.g. a `git archive` of an earlier commit, built in place or with SAGA_PURE_PYTHON=1)."""

from __future__ import annotations

import sys

from loadtests.des.cluster import Cluster
from loadtests.des.fingerprint import CASES

make_tasks, config = CASES["swe-saga-kv-short"]
s = Cluster(make_tasks(), config).run().summary()
print(
    f"{sys.argv[1] if len(sys.argv) > 1 else ''}: {s.tasks - s.failed} of {s.tasks} tasks done, {s.failed} "
    f"failed {dict(s.failed_reasons)}; TCT of those done: geomean {s.tct_geomean_s:.2f} s, "
    f"mean {s.tct_mean_s:.2f} s"
)
