"""A memory probe for soaks (a results script, not project code). Put this directory on PYTHONPATH with
SAGA_TM_DIR set: every `saga serve` process (the supervisor and each worker) logs, every SAGA_TM_PERIOD
seconds (60), its RSS, glibc's heap figures (mallinfo2) and tracemalloc's total to SAGA_TM_DIR/stats-PID.txt.
SAGA_TM_FRAMES (1; 0: no tracemalloc) is the traceback depth; SAGA_TM_SNAP=1 also dumps a snapshot each
period (compare.py reads them); SAGA_TM_COLLECT=1 runs a full garbage collection first, so that a snapshot
holds what is alive and not cycles waiting for the next full collection (the proxy runs those rarely:
proxy/server.py). With SAGA_PURE_PYTHON=1 the snapshots name the proxy's lines.

    SAGA_TM_DIR=/tmp/probe PYTHONPATH=docs/results/soak-s22/probe \
        python -m loadtests.soak --minutes 14 --policy saga --workers 2
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
import threading
import time
import tracemalloc

_HEAP_FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (*_HEAP_FIELDS, "keepcost")]


def _status() -> dict[str, int]:
    found = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                found[key] = int(value.split()[0])
    return found


def _heap() -> dict[str, int]:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return {
        "arena_kb": info.arena // 1024,
        "mmapped_kb": info.hblkhd // 1024,
        "in_use_kb": info.uordblks // 1024,
        "free_kb": info.fordblks // 1024,
    }


def _probe(directory: str) -> None:
    time.sleep(5)  # argv is complete by now
    argv = " ".join(sys.argv)
    if "serve" not in argv or "loadtests" in argv:
        return
    frames = int(os.environ.get("SAGA_TM_FRAMES", "1"))
    if frames and not tracemalloc.is_tracing():
        tracemalloc.start(frames)
    period = float(os.environ.get("SAGA_TM_PERIOD", "60"))
    snapshots = os.environ.get("SAGA_TM_SNAP") == "1"
    collect = os.environ.get("SAGA_TM_COLLECT") == "1"
    pid = os.getpid()
    with open(os.path.join(directory, f"argv-{pid}.txt"), "w") as f:
        f.write(argv)
    n = 0
    while True:
        time.sleep(period)
        if collect:
            gc.collect()
        if snapshots:
            tracemalloc.take_snapshot().dump(os.path.join(directory, f"snap-{pid}-{n:03d}.tm"))
        gen = gc.get_stats()  # passive: how often each generation was collected, and what it freed
        fields = {
            **_status(),
            **_heap(),
            "traced_kb": tracemalloc.get_traced_memory()[0] // 1024,
            **{f"gc{i}_runs": g["collections"] for i, g in enumerate(gen)},
            **{f"gc{i}_freed": g["collected"] for i, g in enumerate(gen)},
        }
        with open(os.path.join(directory, f"stats-{pid}.txt"), "a") as f:
            f.write(f"{n} {time.time():.0f} " + " ".join(f"{k}={v}" for k, v in fields.items()) + "\n")
        n += 1


_directory = os.environ.get("SAGA_TM_DIR")
if _directory:
    threading.Thread(target=_probe, args=(_directory,), daemon=True, name="memory-probe").start()
