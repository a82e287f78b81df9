"""The C allocator's thresholds (proxy/malloc_tuning.py): a large body's short-lived copies stop costing page
faults, and an operator's own settings win."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from proxy.malloc_tuning import operator_set_thresholds, tune_malloc

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

# What a call does to a coding agent's 470 KB body, 200 times: copies made and freed (the body joined from
# two reads); prints the page faults those calls took.
_COPIES = """
import os, resource, sys
from proxy.malloc_tuning import tune_malloc
if sys.argv[1] == "tuned":
    assert tune_malloc()
raw = os.urandom(470_000)
def call():
    return len(b"".join([raw[:200_000], raw[200_000:]]))
for _ in range(20):
    call()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    call()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode: str) -> int:
    env = {"PATH": "/usr/bin:/bin"}  # no MALLOC_* or GLIBC_TUNABLES from the caller's environment
    done = subprocess.run(
        [sys.executable, "-c", _COPIES, mode], capture_output=True, text=True, timeout=60, env=env, check=True
    )
    return int(done.stdout.strip())


@glibc_only
def test_large_short_lived_copies_stop_faulting_pages_in() -> None:
    plain, tuned = _page_faults("plain"), _page_faults("tuned")
    # glibc's own thresholds hand the copies' pages back and fault them in again on every call (~115 pages
    # a copy); with the proxy's, they stay mapped.
    assert plain > 200 * 50
    assert tuned < plain / 20


def test_an_operators_own_thresholds_win(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not operator_set_thresholds({})
    assert not operator_set_thresholds({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F"})
    assert operator_set_thresholds({"MALLOC_MMAP_THRESHOLD_": "1048576"})
    assert operator_set_thresholds({"MALLOC_TRIM_THRESHOLD_": "0"})
    assert operator_set_thresholds({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"})
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1")
    assert tune_malloc() is False
