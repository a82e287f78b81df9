"""Each process's memory at chosen minutes of a soak, from the probe's logs (a results script):

    python3 docs/results/soak-s24/memory_table.py PROBE_DIR [MINUTE ...]

PROBE_DIR: the probe's directory (`SAGA_TM_DIR`), or a copy committed as `supervisor.txt` and `worker-*.txt`.

MiB: anonymous RSS, glibc's heap arena and heap in use (mallinfo2), and what is neither the heap arena nor
mmapped blocks (Python's own object arenas among it): anonymous RSS - arena - mmapped.
"""

from __future__ import annotations

import glob
import os
import sys


def rows(path: str) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {}
    with open(path) as f:
        for line in f:
            index, _, *fields = line.split()
            out[int(index)] = {k: int(v) for k, v in (field.split("=") for field in fields)}
    return out


def main(directory: str, minutes: list[int]) -> None:
    # the probe's own names (stats-<pid>.txt): the supervisor is the first process started; as committed
    # beside the results: supervisor.txt, worker-a.txt, ...
    probed = sorted(glob.glob(f"{directory}/stats-*.txt"), key=lambda p: int(os.path.basename(p)[6:-4]))
    named = glob.glob(f"{directory}/supervisor.txt") + sorted(glob.glob(f"{directory}/worker-*.txt"))
    for n, path in enumerate(probed or named):
        pid = os.path.basename(path)[6:-4] if probed else os.path.basename(path)[:-4]
        role = "supervisor" if n == 0 else "worker"
        data = rows(path)
        print(f"{role} {pid}:")
        for m in [m for m in minutes if m in data] or sorted(data)[-1:]:
            r = data[m]
            rest = r["RssAnon"] - r["arena_kb"] - r["mmapped_kb"]
            print(
                f"  minute {m + 1:3d}: anonymous {r['RssAnon'] / 1024:6.1f}  "
                f"arena {r['arena_kb'] / 1024:5.1f}  in use {r['in_use_kb'] / 1024:5.1f}  "
                f"neither {rest / 1024:5.1f}"
            )


if __name__ == "__main__":
    main(sys.argv[1], [int(m) - 1 for m in sys.argv[2:]] or [0, 14, 29, 44, 59, 74, 89, 104, 118])
