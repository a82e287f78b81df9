# ruff: noqa
"""Item 2: `saga serve --workers 2` twice on one port where TIME_WAIT connections sit (a proxy stopped within the minute): the first holds the port with SO_REUSEADDR+SO_REUSEPORT (the fallback), so the second's probe (SO_REUSEADDR) and hold (SO_REUSEPORT) both pass until the first's workers listen: both run, the kernel spreads clients over two proxies (the 44th review's defect). DEFECT when both run."""

import sys, time, socket, os
import os, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
LOGS = tempfile.mkdtemp(prefix="rev47c-")
sys.path.insert(0, HERE)
from h import *

P = int(sys.argv[1]) if len(sys.argv) > 1 else 25300
reps = sims(1, P + 10)
# leave connections in TIME_WAIT on P (the server side closes first)
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", P))
srv.listen(8)
for _ in range(int(os.environ.get("TW", "3"))):
    c = socket.create_connection(("127.0.0.1", P))
    a, _ = srv.accept()
    a.close()
    time.sleep(0.05)
    c.close()
srv.close()
time.sleep(0.2)
tw = os.popen(f"ss -tan state time-wait '( sport = :{P} )' | tail -n +2 | wc -l").read().strip()
print("TIME_WAIT sockets on the port:", tw)
a = start(
    ["serve", "--port", str(P), "--workers", "2", "--replica", reps[0]], log=os.path.join(LOGS, "t2a.log")
)
time.sleep(float(os.environ.get("GAP", "0.3")))
b = start(
    ["serve", "--port", str(P), "--workers", os.environ.get("SECOND_WORKERS", "2"), "--replica", reps[0]],
    log=os.path.join(LOGS, "t2b.log"),
)
time.sleep(8)
ra, rb = a.poll(), b.poll()
print("first rc", ra, "second rc", rb)
print("second log:", open(os.path.join(LOGS, "t2b.log")).read()[-300:].strip())
lst = os.popen(f"ss -tlnp '( sport = :{P} )'").read()
print(lst)
if ra is None and rb is None:
    print("DEFECT: both supervisors run and listen on the port (the kernel spreads clients over two proxies)")
elif rb is not None and ra is None:
    print("OK: the second supervisor was refused")
else:
    print("?? first", ra, "second", rb)
