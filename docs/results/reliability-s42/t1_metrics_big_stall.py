"""A replica whose /metrics is 16 MB of matching sample lines: does parsing stall the event loop (all
calls)?"""

import time

from common import chat, fake, proxy, rss_mb, stop


def run(mode, base_port):
    a = fake(base_port, "ok")
    b = fake(base_port + 1, mode)
    px = proxy(
        base_port + 2,
        [f"http://127.0.0.1:{base_port}", f"http://127.0.0.1:{base_port + 1}"],
        ["--policy", "round-robin"],
    )
    base = f"http://127.0.0.1:{base_port + 2}"
    time.sleep(2.5)
    lat = []
    t0 = time.time()
    while time.time() - t0 < 10:
        s, dt, body, _ = chat(base, f"hi {len(lat)}", timeout=20)
        assert s == 200, (s, body[:200])
        lat.append(dt)
    rss = rss_mb(px.pid)
    for p in (px, a, b):
        stop(p)
    lat.sort()
    return lat[-1], lat[int(len(lat) * 0.99)], len(lat), rss


base_max, base_p99, n0, rss0 = run("ok", 23100)
big_max, big_p99, n1, rss1 = run("metrics_big", 23110)
print(
    f"normal /metrics: {n0} calls in 10 s, p99 {base_p99 * 1000:.0f} ms, max {base_max * 1000:.0f} ms, "
    f"proxy RSS {rss0:.0f} MB"
)
print(
    f"16 MB /metrics:  {n1} calls in 10 s, p99 {big_p99 * 1000:.0f} ms, max {big_max * 1000:.0f} ms, "
    f"proxy RSS {rss1:.0f} MB"
)
if big_max > 0.3 and big_max > 5 * base_max:
    print(
        f"DEFECT: one replica's 16 MB /metrics stalls every call up to {big_max * 1000:.0f} ms each health "
        f"round (calls {n1} vs {n0})"
    )
else:
    print("OK")
