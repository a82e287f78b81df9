"""Replica A restarts (down, then back); replica H accepts TCP but never answers /health or /v1/models.
How long until A is routed to again, against the same with no hung peer? (health_interval_s 2 s)"""

import time

from common import chat, fake, proxy, replicas, stop


def run(P, with_hung):
    a = fake(P, "ok")
    reps = [f"http://127.0.0.1:{P}"]
    if with_hung:
        h = fake(P + 1, "health_hang")
        reps.append(f"http://127.0.0.1:{P + 1}")
    px = proxy(P + 2, reps, ["--policy", "round-robin"])
    base = f"http://127.0.0.1:{P + 2}"
    time.sleep(3)
    stop(a)
    chat(base, "x")  # a connect error marks A down at once
    time.sleep(0.5)
    a = fake(P, "ok")
    t0 = time.time()
    while time.time() - t0 < 40:
        row = next(r for r in replicas(base) if r["replica_id"] == reps[0])
        if row["healthy"]:
            break
        time.sleep(0.1)
    took = time.time() - t0
    _s, _dt, _, _ = chat(base, "after")
    for p in [px, a] + ([h] if with_hung else []):
        stop(p)
    return took


alone = run(23140, False)
hung = run(23150, True)
print(f"A back in rotation after {alone:.1f} s alone, {hung:.1f} s with a hung peer")
if hung > alone + 3:
    print(
        f"DEFECT: one hung replica delays every replica's health round: A's recovery took {hung:.1f} s vs "
        f"{alone:.1f} s"
    )
else:
    print("OK")
