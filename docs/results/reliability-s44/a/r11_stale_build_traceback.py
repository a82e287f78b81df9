"""README.md:383-384 / docs/development.md:15-21: after editing a compiled module "a stale compiled module
refuses to load and says so". `saga` then dies with a full Python traceback (the message is its last line),
not a one-line `saga: error: ...`. Works on a copy of the snapshot (/tmp/saga-review44a/snapcopy). Port 23123."""

# ruff: noqa
import os as _os, pathlib as _pl

TREE = _os.environ.get("SAGA_TREE") or str(_pl.Path(__file__).resolve().parents[4])
_os.makedirs("/tmp/saga-review44a", exist_ok=True)
import os, shutil, subprocess, sys

copy = "/tmp/saga-review44a/snapcopy"
shutil.rmtree(copy, ignore_errors=True)  # a copy of the tree under test, made afresh
shutil.copytree(TREE, copy, ignore=shutil.ignore_patterns("build", ".venv*", ".cache"))
with open(f"{copy}/simulator/engine.py") as f:
    if "# edited by r11" not in f.read():
        open(f"{copy}/simulator/engine.py", "a").write("# edited by r11\n")
p = subprocess.run(
    [sys.executable, "-m", "proxy.cli", "sim", "--replicas", "1", "--base-port", "23123"],
    env={**os.environ, "PYTHONPATH": copy},
    capture_output=True,
    text=True,
    timeout=30,
    cwd="/tmp/saga-review44a",
)
out = p.stdout + p.stderr
lines = out.strip().splitlines()
print(f"exit {p.returncode}, {len(lines)} lines; first: {lines[0]!r}; last: {lines[-1][:160]!r}")
print(
    "DEFECT: a stale build ends in a Python traceback" if "Traceback" in out else "OK: one clear error line"
)
