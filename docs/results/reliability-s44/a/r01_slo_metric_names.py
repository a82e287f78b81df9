"""docs/observability.md:91 names `saga_tenant_ttft_slo_calls` and `saga_tenant_ttft_slo_met`; /metrics exports
them as `..._total` (as deploy/prometheus/alerts.yaml uses). Ports 23110 (sim), 23010 (proxy)."""

# ruff: noqa
import os as _os, pathlib as _pl

TREE = _os.environ.get("SAGA_TREE") or str(_pl.Path(__file__).resolve().parents[4])
_os.makedirs("/tmp/saga-review44a", exist_ok=True)
import os, re, sys

sys.path.insert(0, os.path.dirname(__file__))
from lib import *

cfg = str(_pl.Path(__file__).resolve().parent / "r01.yaml")
open(cfg, "w").write(
    "replicas: [http://127.0.0.1:23110]\nport: 23010\ntenants: {tenants: {a: {slo_class: interactive}}}\n"
)
start(["sim", "--replicas", "1", "--base-port", "23110"], wait_port=23110)
start(["serve", "--config", cfg], wait_port=23010)
for i in range(3):
    http(
        "POST",
        "http://127.0.0.1:23010/v1/chat/completions",
        {"model": "saga-sim", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2},
        {"X-Tenant-ID": "a", "X-Session-ID": f"s{i}"},
    )
_, _, text = http("GET", "http://127.0.0.1:23010/metrics")
names = sorted(
    {l.split("{")[0].split(" ")[0] for l in text.splitlines() if l.startswith("saga_tenant_ttft_slo")}
)
doc = open(f"{SNAP}/docs/observability.md").read()
documented = sorted(set(re.findall(r"`(saga_tenant_ttft_slo_[a-z_]+)`", doc)))
missing = [n for n in documented if n not in names]
print("exported:", names)
print("documented:", documented)
print(
    f"DEFECT: documented but not exported: {missing}"
    if missing
    else "OK: every documented saga_tenant_ttft_slo_* series is exported"
)
