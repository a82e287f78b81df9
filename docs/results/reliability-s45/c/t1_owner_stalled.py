# ruff: noqa
import os

os.makedirs("/tmp/saga-review45c", exist_ok=True)
# Item 1: the owner worker stalled (SIGSTOP: an event loop that stopped answering): a GET reaching the other
# worker waited 2 s then looked the response up itself (the gather timeout) before this fix; now?
import sys, json

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *

fake = start_fake(27311)
saga = start_saga(27331, 27311, ["--workers", "2"])
P = 27311 - 0  # fake port
PORT = 27311 + 0 - 0
PROXY = 27331
out = []
try:
    st, hs, body, owner = req_pid(PROXY, "POST", "/v1/responses", {"model": "fake", "input": "plain"})
    rid = json.loads(body)["id"]
    os.kill(owner, signal.SIGSTOP)
    try:
        for i in range(6):
            c = http.client.HTTPConnection("127.0.0.1", PROXY, timeout=12)
            c.connect()
            wp = server_pid(PROXY, c.sock.getsockname()[1])
            if wp == owner:
                c.close()
                continue
            t0 = time.monotonic()
            try:
                c.request("GET", f"/v1/responses/{rid}")
                r = c.getresponse()
                r.read()
                out.append((r.status, round(time.monotonic() - t0, 1)))
            except Exception as e:
                out.append((type(e).__name__, round(time.monotonic() - t0, 1)))
            c.close()
            if len(out) >= 1:
                break
    finally:
        os.kill(owner, signal.SIGCONT)
finally:
    stop(saga)
    fake.terminate()
    fake.wait()
if not out:
    print("DEFECT?: no call reached the other worker")
elif any(isinstance(s, str) or t > 5 for s, t in out):
    print(
        f"DEFECT: owner worker stalled: a GET on the other worker got {out} (status or error, seconds) - it waits for the owner's head up to first_byte_timeout_s (600 s) instead of the 2 s gather timeout"
    )
else:
    print(f"OK: owner stalled: the other worker answered {out}")
