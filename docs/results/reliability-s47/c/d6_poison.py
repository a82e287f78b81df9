# ruff: noqa
"""Item 6: a request whose whole answer every replica cuts mid-body (a 'poison' request: the fake replicas cut
any call naming POISON, and serve the others). Each cut counts toward the replica's breaker at once
(call_attempts.cut_short), and the retry now spreads one request over max_retries+1 replicas. Sent three
times (an SDK's default retries of a 502), it opens every replica's breaker (breaker_failures 3): the whole
fleet is out of rotation and a good call gets 503 no_replica. A 5xx is kept from doing exactly this
(docs/config.md breaker_failures: 'a request every replica refuses, however often it is sent, does not take
them all down'). Before the retry only the session's one replica was failed. DEFECT when a good call fails."""

import sys, os, time, subprocess, json
import os, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
LOGS = tempfile.mkdtemp(prefix="rev47c-")
sys.path.insert(0, HERE)
from h import *

ports = [25900, 25901, 25902]
for p in ports:
    fk = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "stallfake.py"), str(p), "poison"],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    PROCS.append(fk)
    wait_port(p)
P = 25905
server = sys.argv[1] if len(sys.argv) > 1 else "fast"
proxy(
    P,
    [f"http://127.0.0.1:{p}" for p in ports],
    args=["--server", server, "--health-interval-s", "5", "--max-retries", os.environ.get("MR", "2")],
    log=os.path.join(LOGS, "d6.log"),
)
time.sleep(1.5)
s, h_, b = req(P, "/v1/chat/completions", CHAT("good0"), headers={"X-Session-ID": "good0"})
print("good call before:", s)
for i in range(3):
    s, h_, b = req(P, "/v1/chat/completions", CHAT("POISON"), headers={"X-Session-ID": "bad"})
    print("poison send", i + 1, s, b[:80])
st = state(P)
print("healthy:", [r.get("healthy") for r in st["replicas"]])
s, h_, b = req(P, "/v1/chat/completions", CHAT("good1"), headers={"X-Session-ID": "good1"})
print("good call after:", s, b[:120])
print(
    f"DEFECT: one request resent 3 times took every replica out: a good call got {s}"
    if s != 200
    else "OK: the fleet still serves"
)
