"""README.md:351-353 and docs/loadtesting.md tell users to run `saga sim --replicas N --base-port P` and
`saga demo --sessions N --steps M ...`, but `--help` gives these options no description and no default
(`saga serve --help` gives every flag one). No ports are opened."""

# ruff: noqa
import os as _os, pathlib as _pl

TREE = _os.environ.get("SAGA_TREE") or str(_pl.Path(__file__).resolve().parents[4])
_os.makedirs("/tmp/saga-review44a", exist_ok=True)
import os, re, sys

sys.path.insert(0, os.path.dirname(__file__))
from lib import *

bare = {}
for cmd in (["sim"], ["demo"], ["bench", "faults"], ["bench", "fairness"], ["bench", "des"], ["serve"]):
    rc, out = run_saga([*cmd, "--help"])
    opts = out.split("options:", 1)[1]
    # an option line with nothing after its metavar, followed by another option line or the end
    lines = opts.splitlines()
    found = []
    for i, l in enumerate(lines):
        m = re.match(r"^  (--[a-z-]+)(?: [A-Z_{},.\-0-9a-z]+)?\s*$", l)
        if m and m.group(1) != "--help" and (i + 1 == len(lines) or re.match(r"^  -", lines[i + 1])):
            found.append(m.group(1))
    if found:
        bare[" ".join(cmd)] = found
for k, v in bare.items():
    print(f"saga {k} --help: no description/default for {v}")
print(
    f"DEFECT: options without help text or default in {sorted(bare)}"
    if bare
    else "OK: every option has help text"
)
