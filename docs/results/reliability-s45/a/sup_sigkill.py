# ruff: noqa
"""saga serve --workers 2, its supervisor SIGKILLed; a new one started on the port 1 s later must serve."""

import os
from pathlib import Path

os.makedirs("/tmp/saga-review45a", exist_ok=True)

import os, signal, sys, time

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sup_common import *

PORT = 25310
l1 = "/tmp/saga-review45a/sigkill_a.log"
l2 = "/tmp/saga-review45a/sigkill_b.log"
a = start(["--workers", "2", "--port", str(PORT)], open(l1, "w"))
st = wait_listening(a, l1)
kids = children(a.pid)
os.kill(a.pid, signal.SIGKILL)
a.wait()
time.sleep(1.0)
b = start(["--workers", "2", "--port", str(PORT)], open(l2, "w"))
st2 = wait_listening(b, l2)
orphans = [k for k in kids if alive(k)]
time.sleep(3)
orphans_later = [k for k in kids if alive(k)]
err = [l for l in open(l2).read().splitlines() if "error" in l][:1]
reap(b, kids)
for k in kids:
    if alive(k):
        os.kill(k, signal.SIGKILL)
if st != "listening":
    print(f"DEFECT?: first supervisor did not start: {st}")
elif st2 != "listening":
    print(
        f"DEFECT: after SIGKILL of a --workers supervisor, a new one on the port does not start ({st2}: {err}); the old workers {kids} survive as orphans ({len(orphans_later)} alive 4 s later) and keep serving the port"
    )
else:
    print(
        f"OK: after SIGKILL of the supervisor the next --workers start served (orphans alive: {orphans_later})"
    )
