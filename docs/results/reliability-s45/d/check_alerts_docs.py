# ruff: noqa
"""Alert `for:` durations and names vs docs/deploy.md's alert table; SagaCallsFailing's ratio evaluated on the
counters of failing proxies (f-*: replica 5xx, answer too large, dead replica) stays within [0, 1]; every
numerator cause is in the denominator (saga_calls_total or the extra causes)."""

import re, yaml, glob

S = "/tmp/snap45b"
R = "/tmp/review45d"
rules = {
    r["alert"]: r
    for g in yaml.safe_load(open(S + "/deploy/prometheus/alerts.yaml"))["groups"]
    for r in g["rules"]
}
dep = open(S + "/docs/deploy.md").read()
table = dict(re.findall(r"^\| `(Saga\w+)` \| (.*) \|$", dep, re.M))
probs = []
if set(table) != set(rules):
    probs.append(f"alerts in docs table {sorted(set(table) ^ set(rules))} differ")


def secs(s):
    return int(s[:-1]) * {"s": 1, "m": 60, "h": 3600}[s[-1]]


want = {
    "SagaReplicaDown": "1 minute",
    "SagaNoHealthyReplica": "30 s",
    "SagaCallsFailing": "5 minutes",
    "SagaWorkerNotReporting": "1 minute",
    "SagaTenantSloBurnSlow": "15 min",
}
for a, phrase in want.items():
    if phrase not in table.get(a, ""):
        probs.append(f"{a}: docs lack '{phrase}'")
    f = rules[a].get("for")
    if f is None or secs(f) != {"1 minute": 60, "30 s": 30, "5 minutes": 300, "15 min": 900}[phrase]:
        probs.append(f"{a}: for={f} vs docs '{phrase}'")
for a in set(rules) - set(want):
    if "for" in rules[a] and a != "SagaTenantSloBurnFast":
        pass
# the file table's one-line summary of alerts.yaml names each alert's subject
summary = re.search(r"`deploy/prometheus/alerts.yaml` \| (.*) \|", dep).group(1)
if "fail" not in summary.lower():
    probs.append(f"docs/deploy.md file table summary of alerts.yaml omits SagaCallsFailing: '{summary}'")
# ratio
ex = rules["SagaCallsFailing"]["expr"]
num_re = re.search(r'sum\(rate\(saga_errors_total\{cause=~"([^"]+)"\}', ex).group(1)
den_re = re.findall(r'saga_errors_total\{cause=~"([^"]+)"\}', ex)[1]
for f in sorted(glob.glob(R + "/f-*-metrics.txt")):
    errs = {
        m[0]: float(m[1])
        for m in re.findall(r'^saga_errors_total\{cause="(\w+)"\} (\S+)', open(f).read(), re.M)
    }
    calls = sum(float(x) for x in re.findall(r"^saga_calls_total\{[^}]*\} (\S+)", open(f).read(), re.M))
    num = sum(v for k, v in errs.items() if re.fullmatch(num_re, k))
    den = calls + sum(v for k, v in errs.items() if re.fullmatch(den_re, k))
    r = num / den if den else float("nan")
    if not (0 <= r <= 1):
        probs.append(f"{f}: ratio {num}/{den}={r}")
print(
    ("DEFECT: " + " | ".join(probs))
    if probs
    else "OK: alert names/for: match docs/deploy.md; SagaCallsFailing ratio in [0,1] on 5xx, too-large and dead-replica counters"
)
