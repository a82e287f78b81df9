"""The three runs of live_balanced.sh side by side: each router's mean task completion time (failed tasks),
and `saga`'s speedup over each other router in the same run.
Usage: python3 docs/results/saga-v41/live_balanced_summary.py > docs/results/saga-v41/live_balanced.txt"""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

for run in (1, 2, 3):
    data = json.loads((HERE / f"live-balanced-run{run}.json").read_text())
    policies = data["policies"]
    saga = policies["saga:saga"]["tct_mean_s"]
    print(f"run {run} ({data['meta']['date']}, {data['meta']['machine']}):")
    for name, m in policies.items():
        print(
            f"  {name:34s} TCT mean {m['tct_mean_s']:6.1f} s  failed {m['failed']}  "
            f"saga's speedup over it {m['tct_mean_s'] / saga:.2f}x  "
            f"replica lag {m['replica_lag_s'] or 0:.2f} s"
        )
