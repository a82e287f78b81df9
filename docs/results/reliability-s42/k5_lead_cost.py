# ruff: noqa: E501  (a reviewer's reproduction, kept as it ran)
import os
import sys
import time

sys.path.insert(
    0, os.environ.get("SAGA_ROOT", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
)
from proxy.kv_residency import BlockStored, KvResidency

BS = 16
for bases, nblocks in ((0, 8000), (1, 8000), (63, 8000), (63, 20000)):
    kv = KvResidency()
    seq = 0
    parent = None
    for k in range(bases):
        kv.apply("r", seq, [BlockStored([1000 + k], BS, parent, session_id=f"s{k}")])
        seq += 1
        parent = 1000 + k
    long = list(range(10**6, 10**6 + nblocks))
    t = time.perf_counter()
    kv.apply("r", seq, [BlockStored(long, BS, parent, session_id="big")])
    seq += 1
    t1 = time.perf_counter()
    kv.apply("r", seq, [BlockStored([*long[:-1], 7], BS, parent, session_id="dup")])
    seq += 1
    t2 = time.perf_counter()
    print(
        f"bases {bases:2d} blocks {nblocks}: first store {(t1 - t) * 1e3:6.1f} ms, duplicate copy store {(t2 - t1) * 1e3:6.1f} ms"
    )
