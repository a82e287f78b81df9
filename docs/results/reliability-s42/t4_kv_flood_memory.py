"""A replica's KV-event publisher sends valid batches faster than the proxy applies them: is the proxy's
memory bounded (ZMQ's receive queue holds RCVHWM=100,000 messages of up to 64 MB each)?"""

import os
import sys
import time

from common import HERE, TMP, chat, fake, proxy, replicas, rss_mb, start, stop

P = 23130
EP = f"tcp://127.0.0.1:{P + 9}"
cfg = f"{TMP}/t4.yaml"
with open(cfg, "w") as f:
    f.write(f"kv_events:\n  discover: false\n  endpoints:\n    'http://127.0.0.1:{P}': '{EP}'\n")
a = fake(P, "ok")
pub = start([sys.executable, os.path.join(HERE, "kvpub.py"), EP, "12", "100000"], log=f"{TMP}/t4_pub.log")
px = proxy(P + 2, [f"http://127.0.0.1:{P}"], ["--policy", "round-robin"], config=cfg, log=f"{TMP}/t4.log")
base = f"http://127.0.0.1:{P + 2}"
rss0 = rss_mb(px.pid)
peak = rss0
t0 = time.time()
cut = False
samples = []
while time.time() - t0 < 14:
    time.sleep(1)
    r = rss_mb(px.pid)
    peak = max(peak, r)
    samples.append(round(r))
    if r > 2500:
        stop(pub)
        cut = True
        break
s, dt, _, _ = chat(base, "during flood", timeout=30)
kv = replicas(base)[0]["kv_events"]
print(
    "RSS MB per second:",
    samples,
    "| a call during it:",
    s,
    f"{dt:.2f}s",
    "| batches applied:",
    kv and kv["batches"],
)
with open(f"{TMP}/t4_pub.log") as f:
    print(f.read().strip())
if peak - rss0 > 1000:
    print(
        f"DEFECT: one replica's KV-event publisher grew the proxy from {rss0:.0f} to {peak:.0f} MB in "
        f"{time.time() - t0:.0f} s" + (" (cut at 2.5 GB)" if cut else "")
    )
else:
    print("OK", rss0, peak)
os.remove(cfg)
