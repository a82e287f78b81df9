"""One replica: /health answers 200 at once, calls are answered at once, only /metrics is slower than
health_timeout_s (here 6 s vs 5 s). Is the replica taken out of rotation (calls refused)?"""

import sys
import time

from common import TMP, chat, fake, get, post, proxy, replicas

P = 23120

MODE = sys.argv[1] if len(sys.argv) > 1 else "metrics_slow"
a = fake(P, MODE, FAKE_SLOW=6)
px = proxy(P + 2, [f"http://127.0.0.1:{P}"], ["--policy", "round-robin"], log=f"{TMP}/t2.log")
base = f"http://127.0.0.1:{P + 2}"
time.sleep(8)
direct = post(
    f"http://127.0.0.1:{P}/v1/chat/completions",
    {"model": "saga-sim", "messages": [{"role": "user", "content": "x"}]},
)[0]
health_direct = get(f"http://127.0.0.1:{P}/health")[0]
res = []
for i in range(5):
    s, dt, body, _ = chat(base, f"hello {i}")
    res.append(s)
    time.sleep(0.5)
row = replicas(base)[0]
print(
    MODE,
    "replica direct: /health",
    health_direct,
    "chat",
    direct,
    "| via proxy:",
    res,
    "| listed healthy:",
    row["healthy"],
)
if any(s != 200 for s in res) and direct == 200:
    print(
        f"DEFECT: a replica whose only fault is a /metrics slower than health_timeout_s is taken out: "
        f"calls got {res}, "
        f"body {body[:160]!r}"
    )
else:
    print("OK")
