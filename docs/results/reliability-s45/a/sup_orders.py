# ruff: noqa
"""A second proxy on a port a first one serves (single-process and --workers, both orders, host spellings,
IPv6, started at once or after the first listens): the second must be refused with one 'saga: error' line."""

import os
from pathlib import Path

os.makedirs("/tmp/saga-review45a", exist_ok=True)

import os, signal, sys, time

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sup_common import *

W = ["--workers", "2"]
CASES = [  # (first host, first workers?, second host, second workers?, delay before second)
    ("127.0.0.1", False, "127.0.0.1", True, None),
    ("127.0.0.1", True, "127.0.0.1", False, None),
    ("0.0.0.0", True, "127.0.0.1", True, None),
    ("127.0.0.1", True, "0.0.0.0", True, None),
    ("::", True, "0.0.0.0", True, None),
    ("0.0.0.0", True, "::", True, None),
    ("localhost", True, "127.0.0.1", True, None),
    ("::1", True, "::1", True, None),
    ("0.0.0.0", False, "127.0.0.1", True, None),
    ("127.0.0.1", True, "0.0.0.0", False, None),
    ("127.0.0.1", True, "0.0.0.0", True, 0.3),
    ("0.0.0.0", True, "127.0.0.1", True, 0.3),
    ("127.0.0.1", True, "localhost", True, 0.3),
]
bad, okc = [], 0
for i, (h1, w1, h2, w2, delay) in enumerate(CASES):
    port = 25320 + i
    l1, l2 = f"/tmp/saga-review45a/ord{i}a.log", f"/tmp/saga-review45a/ord{i}b.log"
    a = start(["--host", h1, "--port", str(port), *(W if w1 else [])], open(l1, "w"))
    if delay is None:
        s1 = wait_listening(a, l1)
    else:
        time.sleep(delay)
        s1 = "started"
    b = start(["--host", h2, "--port", str(port), *(W if w2 else [])], open(l2, "w"))
    s2 = wait_listening(b, l2, 25)
    if delay is not None:
        s1 = wait_listening(a, l1, 25)
    time.sleep(0.5)
    err2 = [l for l in open(l2).read().splitlines() if l.startswith("saga: error")]
    tb = "Traceback" in open(l2).read() or "Traceback" in open(l1).read()
    desc = f"{h1}{'/w' if w1 else '/1'} then {h2}{'/w' if w2 else '/1'}{'' if delay is None else f' after {delay}s'}"
    if (
        s1 != "listening"
        or s2 != "exit 1"
        and not s2.startswith("exit")
        or not err2
        or tb
        or a.poll() is not None
    ):
        bad.append(
            f"{desc}: first {s1} (alive {a.poll() is None}), second {s2}, err {err2[:1]}, traceback {tb}"
        )
    else:
        okc += 1
    reap(a)
    reap(b)
if bad:
    print(f"DEFECT: {len(bad)}/{len(CASES)} cases let a second proxy serve the port or failed oddly: {bad}")
else:
    print(f"OK: all {len(CASES)} second-proxy cases refused with a saga: error line, first kept serving")
