"""With `discovery` (deploy/k8s/base/saga-configmap.yaml) and no address resolved yet, the start line reads
"SAGA proxy listening on http://127.0.0.1:23040 (policy saga) -> " with nothing after the arrow: it does not
say replicas come from DNS, nor that none is known yet. Port 23040."""

# ruff: noqa
import os as _os, pathlib as _pl

TREE = _os.environ.get("SAGA_TREE") or str(_pl.Path(__file__).resolve().parents[4])
_os.makedirs("/tmp/saga-review44a", exist_ok=True)
import os, sys, time

sys.path.insert(0, os.path.dirname(__file__))
from lib import *

cfg = str(_pl.Path(__file__).resolve().parent / "r12.yaml")
open(cfg, "w").write(
    "host: 127.0.0.1\nport: 23040\nreplicas: []\ndiscovery: {name: vllm.saga.svc.cluster.local, port: 8000, interval_s: 10}\n"
)
log = "/tmp/saga-review44a/r12.log"
p = start(["serve", "--config", cfg], wait_port=23040, log=log)
time.sleep(0.5)
stop(p)
line = next(l.rstrip("\n") for l in open(log) if "listening" in l)
print(repr(line))
print(
    "DEFECT: the listening line ends with an empty replica list"
    if line.rstrip().endswith("->")
    else "OK: the line names the replica source"
)
