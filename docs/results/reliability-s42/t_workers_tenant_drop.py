# ruff: noqa: E501  (a reviewer's reproduction, kept as it ran)
"""With --workers 2, a tenant's record dropped by one worker's full ledger makes the merged
per-tenant counters on /metrics go down while the series stays (Prometheus reads a reset)."""

import os
import re
import sys
import tempfile
import time

os.environ.setdefault("SAGA_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.environ["SAGA_ROOT"])
import common as C

from proxy.worker_set import owner_of

FP, PP = 25101, 25100
C.fake(FP)
base = f"http://127.0.0.1:{PP}"
C.proxy(
    PP,
    [f"http://127.0.0.1:{FP}"],
    extra=["--workers", "2", "--time-scale", "100", "--health-interval-s", "0.5"],
    log=os.path.join(tempfile.gettempdir(), "workers_drop.log"),
)
time.sleep(1.5)


def sid_for(worker, prefix):
    i = 0
    while owner_of(f"{prefix}-{i}", 2) != worker:
        i += 1
    return f"{prefix}-{i}"


def call(tenant, sid):
    s, b, _h = C.post(
        base + "/v1/chat/completions",
        {"model": "saga-sim", "messages": [{"role": "user", "content": "hi " + sid}], "max_tokens": 2},
        {"X-Session-ID": sid, "x-tenant-id": tenant},
    )
    assert s == 200, (s, b[:200])


def count(tenant):
    text = C.get(base + "/metrics")[1].decode()
    m = re.search(rf'^saga_tenant_ttft_seconds_count\{{tenant="{re.escape(tenant)}"\}} (\S+)$', text, re.M)
    return None if m is None else float(m.group(1))


s0, s1 = sid_for(0, "x0"), sid_for(1, "x1")
for _ in range(5):
    call("X", s0)
for _ in range(3):
    call("X", s1)
print("X count after 5 calls on w0, 3 on w1:", count("X"))
for k in range(255):  # fill worker 0's ledger (256 records with X)
    call(f"f{k}", sid_for(0, f"f{k}"))
print("fill done")
t0 = time.time()
while time.time() - t0 < 10.5:  # 900 s of the core's clock at --time-scale 100; X stays active on worker 1
    call("X", s1)
    time.sleep(1.0)
before = count("X")
call("NEW", sid_for(0, "new"))  # a new tenant at worker 0's full ledger
time.sleep(0.3)
after = count("X")
print(f"X ttft count before new tenant: {before}, after: {after}")
if after is not None and before is not None and after < before:
    print(
        f'DEFECT: merged saga_tenant_ttft_seconds_count{{tenant="X"}} went down {before} -> {after} (series kept)'
    )
else:
    print("OK")
