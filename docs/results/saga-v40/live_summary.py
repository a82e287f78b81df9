"""Summarise the three `saga bench live --workload demo` runs beside this script (live-demo-run*.json): each
run's TCT geomean (s) for `saga`, session-affinity and the best peer router, and `saga`'s speedups.
`python3 docs/results/saga-v40/live_summary.py`."""

from __future__ import annotations

import glob
import json
import os

here = os.path.dirname(os.path.abspath(__file__))
for path in sorted(glob.glob(os.path.join(here, "live-demo-run*.json"))):
    with open(path) as f:
        policies = json.load(f)["policies"]
    geo = {name: p["tct_geomean_s"] for name, p in policies.items()}
    failed = {name: p["failed"] for name, p in policies.items() if p["failed"]}
    peers = {name: g for name, g in geo.items() if not name.startswith("saga:")}
    best = min(peers, key=peers.__getitem__)
    saga, affinity = geo["saga:saga"], geo["saga:session-affinity"]
    print(
        f"{os.path.basename(path)}: saga {saga:.1f} s, "
        f"session-affinity {affinity:.1f} s ({affinity / saga:.2f}x), "
        f"best peer {best} {peers[best]:.1f} s ({peers[best] / saga:.2f}x); failed tasks: {failed or 'none'}"
    )
