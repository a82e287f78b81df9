"""The C allocator's thresholds for a proxy that copies large request bodies (glibc only).

A coding agent deep in its task sends ~0.5 MB of JSON a call, and the proxy makes a few short-lived copies
of it (the body read, the rewritten body, the upstream request). glibc serves such sizes from the heap once
its dynamic mmap threshold has risen past them, but its trim threshold follows at twice that, so freeing two
of those copies at the top of the heap hands the pages back to the kernel, and the next call faults them in
again (and the kernel zeroes them): ~0.5 ms of CPU a call for a 470 KB body, as much as everything else the
call costs (`python -m loadtests.bench.call_cost --request long`, docs/results/overhead.md "Nineteenth
session").

Contract: `tune_malloc()` sets fixed thresholds with `mallopt` (which also turns glibc's dynamic adjustment
off): allocations under `MMAP_THRESHOLD` come from the heap, and the heap keeps up to `TRIM_THRESHOLD` of
free memory at its top before returning it. Memory stays bounded: the process holds at most that much free
memory beyond what it uses. It does nothing (and returns False) on a C library other than glibc, when ctypes
cannot load it, or when the operator set either threshold in the environment (`MALLOC_MMAP_THRESHOLD_`,
`MALLOC_TRIM_THRESHOLD_`, or `glibc.malloc.*_threshold` in `GLIBC_TUNABLES`): theirs stand. Called once
by `saga serve` (every worker).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger("saga.proxy")

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 * 1024 * 1024  # bodies up to ~1M tokens of JSON come from the heap
TRIM_THRESHOLD = 32 * 1024 * 1024  # a few such copies at once stay mapped between calls


def operator_set_thresholds(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Whether the environment sets either threshold (glibc reads it at start-up)."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    return bool(
        environ.get("MALLOC_MMAP_THRESHOLD_")
        or environ.get("MALLOC_TRIM_THRESHOLD_")
        or "malloc.mmap_threshold" in tunables
        or "malloc.trim_threshold" in tunables
    )


def tune_malloc() -> bool:
    """Sets the thresholds; True when both were set."""
    if platform.libc_ver()[0] != "glibc" or operator_set_thresholds():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    )
    if not done:
        log.warning("could not set the C allocator's thresholds (mallopt); large bodies cost more CPU")
    return done
