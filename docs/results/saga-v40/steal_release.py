"""Releasing a workflow's retention where work stealing moved it from (the fifth review's LOW item), tried in
the nine declared 16 x 70B cells:
`SAGA_PURE_PYTHON=1 PYTHONPATH=. python3 docs/results/saga-v40/steal_release.py` runs each cell
(docs/results/saga-v16/cells.txt) with `saga` as it is and with the release added to
`SchedulerCore._place_admitted` (the core's source patched in memory: pure Python only), and prints each
cell's TCT geomean (s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

PATCH = """
import proxy.scheduler.core as core
marker = "                self.moves += 1\\n"
src = open(core.__file__.replace(".pyc", ".py")).read()
assert marker in src
release = (
    "                session = self.sessions.get(req.session_id)\\n"
    "                if session is not None and session.retained_on == bound.replica_id:\\n"
    "                    self._give_up_retained(req.session_id, session)\\n"
)
exec(compile(src.replace(marker, marker + release), core.__file__, "exec"), core.__dict__)
import proxy.scheduler as scheduler
import loadtests.des.cluster as cluster
scheduler.SchedulerCore = cluster.SchedulerCore = core.SchedulerCore
"""
RUN = """
import sys
from proxy.cli import main
sys.argv = ["saga", "bench", "des", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
"""

if os.environ.get("SAGA_PURE_PYTHON") != "1":
    sys.exit("pure Python only (the patch rewrites the core's source): SAGA_PURE_PYTHON=1")
root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
cells_txt = os.path.join(root, "docs/results/saga-v16/cells.txt")
with open(cells_txt) as cells, tempfile.TemporaryDirectory() as tmp:
    for line in cells:
        name, *args = line.split()
        figures = []
        for variant, prelude in (("as is", ""), ("release on a steal", PATCH)):
            out = os.path.join(tmp, f"{name}.json")
            cmd = [*args, "--policies", "saga", "--jobs", "1", "--json", out]
            subprocess.run(
                [sys.executable, "-c", prelude + RUN, *cmd], cwd=root, check=True, capture_output=True
            )
            with open(out) as f:
                figures.append(f"{variant} {json.load(f)['policies']['saga']['tct_geomean_s']:.4f}")
        print(name, " | ".join(figures), flush=True)
