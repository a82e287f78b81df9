"""A replica whose /v1/models lists ~1M models (under the 16 MiB read bound): event-loop stalls in the health
loop's model read, and what one client's GET /v1/models costs every other call."""

import threading
import time

from common import chat, fake, get, proxy, rss_mb

P = 23160
a = fake(P, "ok")
b = fake(P + 1, "models_big")
px = proxy(P + 2, [f"http://127.0.0.1:{P}", f"http://127.0.0.1:{P + 1}"], ["--policy", "round-robin"])
base = f"http://127.0.0.1:{P + 2}"
time.sleep(3)
lat = []
t0 = time.time()
while time.time() - t0 < 12:
    s, dt, body, _ = chat(base, f"hi {len(lat)}")
    lat.append(dt)
lat.sort()
health_max = lat[-1]
# one client asking GET /v1/models in a loop, while calls go on
stopflag = []


def asker():
    while not stopflag:
        get(base + "/v1/models", timeout=30)


th = threading.Thread(target=asker)
th.start()
lat2 = []
t0 = time.time()
while time.time() - t0 < 8:
    s, dt, body, _ = chat(base, f"ho {len(lat2)}")
    lat2.append(dt)
stopflag.append(1)
th.join()
t = time.time()
st, body = get(base + "/saga/v1/replicas", timeout=30)
rep_s = time.time() - t
lat2.sort()
print(
    f"health loop only: {len(lat)} calls in 12 s, max {health_max * 1000:.0f} ms; with a GET /v1/models "
    f"loop: {len(lat2)} calls in 8 s, p50 {lat2[len(lat2) // 2] * 1000:.0f} ms max {lat2[-1] * 1000:.0f} ms; "
    f"/saga/v1/replicas {len(body) / 1e6:.1f} MB in {rep_s:.2f} s; RSS {rss_mb(px.pid):.0f} MB"
)
if health_max > 0.3 or lat2[-1] > 0.5:
    print(
        f"DEFECT: a replica's 16 MB model list stalls the proxy: calls up to {health_max * 1000:.0f} ms "
        f"(health loop), {lat2[-1] * 1000:.0f} ms (a client reading /v1/models)"
    )
else:
    print("OK")
