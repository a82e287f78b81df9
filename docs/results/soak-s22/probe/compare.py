"""What grew between two of the probe's tracemalloc snapshots, per process (a results script):

    python docs/results/soak-s22/probe/compare.py SAGA_TM_DIR [FIRST]

FIRST (1) is the index of the earlier snapshot; the later one is each process's last. TOP (15) lines each,
by file and by line.
"""

from __future__ import annotations

import glob
import os
import sys
import tracemalloc


def main(directory: str, first: int) -> None:
    top = int(os.environ.get("TOP", "15"))
    pids = sorted({os.path.basename(p).split("-")[1] for p in glob.glob(f"{directory}/snap-*.tm")})
    ignored = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib*>"),
    ]
    for pid in pids:
        paths = sorted(glob.glob(f"{directory}/snap-{pid}-*.tm"))
        if len(paths) <= first:
            continue
        before = tracemalloc.Snapshot.load(paths[first]).filter_traces(ignored)
        after = tracemalloc.Snapshot.load(paths[-1]).filter_traces(ignored)
        total_before = sum(s.size for s in before.statistics("filename")) / 1e6
        total_after = sum(s.size for s in after.statistics("filename")) / 1e6
        names = f"{os.path.basename(paths[first])} -> {os.path.basename(paths[-1])}"
        print(f"== pid {pid}: {names}: traced {total_before:.1f} -> {total_after:.1f} MB")
        for key in ("filename", "lineno"):
            for stat in after.compare_to(before, key)[:top]:
                print(f"  {stat.size_diff / 1e3:+9.1f} kB {stat.count_diff:+7d}  {stat.traceback}")
            print()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1)
