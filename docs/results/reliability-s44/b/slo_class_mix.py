"""--tenant-mix's slo_class field (docs/loadtesting.md: `tenant:weight[:slo_class[:workload]]`, preset `tiers`)
is accepted whatever it says and never reaches the proxy or the report; `saga bench live --tenants` refuses an
unknown class ('an unknown SLO class was taken for `standard`', loadtests/bench/cli.py)."""

# ruff: noqa
import os as _os, pathlib as _pl

HERE = str(_pl.Path(__file__).resolve().parent)
TREE = _os.environ.get("SAGA_TREE") or str(_pl.Path(__file__).resolve().parents[4])
_os.makedirs("/tmp/saga-review44b", exist_ok=True)
import subprocess, sys

sys.path.insert(0, TREE)
from loadtests.locust_options import parse_tenant_mix

try:
    streams = parse_tenant_mix("a:1:platinum")
except ValueError as e:  # refused, naming it (the fix; the docs say the class is the proxy's to decide)
    print("parse_tenant_mix('a:1:platinum') refused:", e)
    print("OK: an unknown SLO class is refused")
    raise SystemExit(0)
print("parse_tenant_mix('a:1:platinum') ->", streams)
src = (
    open(f"{TREE}/loadtests/agent_client.py").read()
    + open(f"{TREE}/loadtests/locust_client.py").read()
    + open(f"{TREE}/loadtests/locustfile.py").read()
)
sent = "slo_class" in src
r = subprocess.run(
    [sys.executable, "-m", "proxy.cli", "bench", "live", "--tenants", "a:1:platinum", "--tasks", "1"],
    cwd=TREE,
    capture_output=True,
    text=True,
    timeout=60,
)
print("saga bench live --tenants a:1:platinum ->", r.returncode, r.stderr.strip().splitlines()[-1][:160])
if streams and streams[0].slo_class == "platinum" and not sent:
    print(
        "DEFECT: Locust accepts SLO class 'platinum' (not a class) silently, and the SLO class of any mix is used "
        "nowhere by the locustfile/agent client (not sent, not in the row names)"
    )
else:
    print("OK")
