"""One Markdown row per tracemalloc snapshot of a soak process (a results script):

    python docs/results/soak-s26/snapshot_table.py SAGA_TM_DIR PID UPSTREAM_PARSER_LINE CLIENT_PARSER_LINE

Columns: the minute (snapshots every 5 minutes), traced MB, the kB allocated under predictor/return_model.py
(return models), and the count of blocks allocated on the two lines that create the httptools parsers of
upstream and client connections (e.g. `upstream_pool.py:67` and `fast_server.py:218` at 6d7c4a5): one parser
per connection object alive.
"""

from __future__ import annotations

import glob
import os
import sys
import tracemalloc


def main(directory: str, pid: str, upstream_line: str, client_line: str) -> None:
    for path in sorted(glob.glob(f"{directory}/snap-{pid}-*.tm")):
        snapshot = tracemalloc.Snapshot.load(path)
        total = models = upstream = client = 0
        for stat in snapshot.statistics("traceback"):
            total += stat.size
            names = [f"{frame.filename}:{frame.lineno}" for frame in stat.traceback]
            if any("return_model.py" in name for name in names):
                models += stat.size
            if names[-1].endswith(upstream_line):
                upstream += stat.count
            if names[-1].endswith(client_line):
                client += stat.count
        index = int(os.path.basename(path)[-6:-3])
        print(f"| {5 * (index + 1)} | {total / 1e6:.2f} | {models / 1e3:.0f} | {upstream} | {client} |")


if __name__ == "__main__":
    main(*sys.argv[1:5])
