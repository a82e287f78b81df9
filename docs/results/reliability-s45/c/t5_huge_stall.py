# ruff: noqa
import os

os.makedirs("/tmp/saga-review45c", exist_ok=True)
# Item 5: a huge stateless input (many tiny items) stalls the proxy's event loop how long, against a chat call
# of as many messages (the chain's documented bound: ~0.8 s for 1.6M messages)?
import sys, json, threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *

fake = start_fake(27151)
saga = start_saga(27051, 27151, [])
N = 1_000_000
item = b'{"role":"user","content":"a"},'
inp = b"[" + item * (N - 1) + item[:-1] + b"]"


def stall(path, key):
    body = b'{"model":"fake","store":false,"' + key + b'":' + inp + b"}"
    gaps = []
    stop_ = threading.Event()

    def poll():
        c = http.client.HTTPConnection("127.0.0.1", 27051, timeout=30)
        while not stop_.is_set():
            t = time.monotonic()
            c.request("GET", "/health")
            c.getresponse().read()
            gaps.append(time.monotonic() - t)
            time.sleep(0.005)

    th = threading.Thread(target=poll)
    th.start()
    time.sleep(0.3)
    c = http.client.HTTPConnection("127.0.0.1", 27051, timeout=60)
    c.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    r.read()
    time.sleep(0.5)
    stop_.set()
    th.join()
    return max(gaps), r.status


try:
    chat = [stall("/v1/chat/completions", b"messages") for _ in range(2)]
    resp = [stall("/v1/responses", b"input") for _ in range(2)]
finally:
    stop(saga)
    fake.terminate()
    fake.wait()
c, r = min(x[0] for x in chat), min(x[0] for x in resp)
verdict = "DEFECT" if r > max(1.0, 2 * c) else "OK"
print(
    f"{verdict}: {N} tiny items: /health blocked up to {r:.2f} s by a stateless /v1/responses input vs {c:.2f} s by as many chat messages (statuses {[x[1] for x in resp]}, {[x[1] for x in chat]})"
)
