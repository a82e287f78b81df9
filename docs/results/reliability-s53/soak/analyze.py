# ruff: noqa
import json

recs = [json.loads(l) for l in open("/tmp/rev53s/soak-samples.jsonl")]
load = [r for r in recs if not r["label"]]


def slope(rs, pid):
    xs = [r["t"] for r in rs]
    ys = [r["rss_kb"][pid] / 1024 for r in rs]
    n = len(xs)
    mx = sum(xs) / n
    my = sum(ys) / n
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs) * 60


pids = list(load[0]["rss_kb"])
T = load[-1]["t"]
first = [r for r in load if r["t"] <= 300]
last = [r for r in load if r["t"] >= T - 300]
for p in pids:
    print(f"worker {p}: RSS MB " + " ".join(f"{r['t']}:{r['rss_kb'][p] / 1024:.1f}" for r in recs))
    print(f"  slope first 5 min {slope(first, p):.2f} MB/min, last 5 min {slope(last, p):.2f} MB/min")
print("sessions:", [(r["t"], r["sessions"]) for r in recs])
print("in_flight:", [(r["t"], r["in_flight"]) for r in recs])
print(
    "end samples:",
    json.dumps(
        [
            {
                k: r[k]
                for k in (
                    "t",
                    "label",
                    "in_flight",
                    "queued",
                    "sessions",
                    "admission",
                    "rep_in_flight",
                    "rep_reserved",
                    "spills",
                    "moves",
                    "cache_keys",
                    "quoted",
                    "workers_missing",
                )
            }
            for r in recs
            if r["label"]
        ],
        indent=0,
    ),
)
