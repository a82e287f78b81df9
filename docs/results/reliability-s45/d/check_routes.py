# ruff: noqa
"""Admin/health/metrics routes the docs name answer on the running proxy (w1: 1 worker, w2: --workers 2, w3: kv_events)."""

import json

R = "/tmp/review45d"
probs = []
for w in ("w1", "w2", "w3"):
    res = json.load(open(f"{R}/{w}-results.json"))
    for path in (
        "/health",
        "/metrics",
        "/saga/v1/replicas",
        "/saga/v1/sessions",
        "/saga/v1/queue",
        "/saga/v1/state",
        "/v1/models",
    ):
        st, ct = res[f"GET {path}"]
        if st != 200:
            probs.append(f"{w} {path} -> {st}")
        if path == "/metrics" and not ct.startswith("text/plain"):
            probs.append(f"{w} /metrics {ct}")
    h = json.load(open(f"{R}/{w}-health.txt"))
    if h.get("healthy_replicas") != 2:
        probs.append(f"{w} /health {h}")
    reps = json.load(open(f"{R}/{w}-replicas.txt"))["replicas"]
    for r in reps:
        if "kv_events" not in r:
            probs.append(f"{w} replica lacks kv_events")
    if w == "w3":
        kv = reps[0]["kv_events"] or {}
        miss = [
            k
            for k in (
                "source",
                "batches",
                "gaps",
                "overflows",
                "skipped_events",
                "cached_blocks",
                "sessions",
                "ranks",
            )
            if k not in kv
        ]
        if miss:
            probs.append(f"w3 kv_events lacks {miss}")
        s = open(f"{R}/w3-sessions.txt").read()
        if "kv_resident" not in s:
            probs.append("w3 /saga/v1/sessions lacks kv_resident")
print(
    ("DEFECT: " + " | ".join(probs))
    if probs
    else "OK: /health /metrics /saga/v1/{replicas,sessions,queue,state} /v1/models answer 200 (1 worker, 2 workers, kv_events); kv_events fields as docs/observability.md"
)
