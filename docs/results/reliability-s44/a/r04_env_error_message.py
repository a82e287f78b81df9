"""docs/config.md:3-10: a wrong value "stops the proxy with an error that names the key"; environment values
are text and converted. A bad SAGA_* value's error names neither the variable nor the value, and says
"got `str`" (every environment value is a str), unlike the same mistake as a flag. No ports are opened."""

# ruff: noqa
import os as _os, pathlib as _pl

TREE = _os.environ.get("SAGA_TREE") or str(_pl.Path(__file__).resolve().parents[4])
_os.makedirs("/tmp/saga-review44a", exist_ok=True)
import os, sys

sys.path.insert(0, os.path.dirname(__file__))
from lib import *

bad = []
for env, flag in [
    ({"SAGA_PORT": "abc"}, ["--port", "abc"]),
    ({"SAGA_HEALTH_INTERVAL_S": "fast"}, ["--health-interval-s", "fast"]),
    ({"SAGA_TENANT_CACHE_SALT": "no"}, None),
    ({"SAGA_ACCESS_LOG": "off"}, None),
]:
    rc, out = run_saga(["serve", "--replica", "http://127.0.0.1:23999"], env=env)
    name, value = next(iter(env.items()))
    line = [l for l in out.splitlines() if "error" in l][-1]
    print(f"{name}={value!r}: rc={rc}: {line}")
    if flag:
        rc2, out2 = run_saga(["serve", "--replica", "http://127.0.0.1:23999", *flag])
        print(
            f"   as a flag {' '.join(flag)}: rc={rc2}: {[l for l in out2.splitlines() if 'error' in l][-1]}"
        )
    if name not in line and value not in line:
        bad.append(name)
print(
    f"DEFECT: the error names neither the variable nor its value for {bad}"
    if bad
    else "OK: every env error names its variable or value"
)
