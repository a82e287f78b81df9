# ruff: noqa
"""Every dashboard query and alert expression: parses as PromQL (promql-parser), each metric exists on a running
proxy's /metrics (w1: --simulate 2, w2: --workers 2, w3: --kv-events, f-*: failing replicas) or a simulated replica's, each label
filtered or grouped on exists on that metric, each literal label value filtered on is seen or documented,
histogram quantiles use _bucket and `by (le)`, rate windows >= 4 x the 5 s scrape interval."""

import glob, json, re, sys, yaml, promql_parser as P

R = "/tmp/review45d"
S = "/tmp/snap45b"
fams = {}  # metric -> set of label names; values: (metric,label) -> set
vals = {}
for f in (
    glob.glob(R + "/w?-metrics.txt")
    + glob.glob(R + "/f-*-metrics.txt")
    + glob.glob(R + "/w?-replica*-metrics.txt")
):
    for line in open(f):
        if line.startswith("# TYPE"):
            n = line.split()[2]
            fams.setdefault(n, set())
            if line.split()[3] == "counter":
                fams.setdefault(n + "_total", set())
            if line.split()[3] == "histogram":
                for s in ("_bucket", "_sum", "_count"):
                    fams.setdefault(n + s, set())
            continue
        if line.startswith("#") or not line.strip():
            continue
        m = re.match(r"([a-zA-Z_:][\w:]*)(\{(.*)\})?\s", line)
        n = m.group(1)
        fams.setdefault(n, set())
        for k, v in re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""):
            fams[n].add(k)
            vals.setdefault((n, k), set()).add(v)
doc = open(S + "/docs/observability.md").read()
exprs = []
d = json.load(open(S + "/deploy/grafana/saga-dashboard.json"))
for p in d["panels"]:
    for t in p.get("targets", []):
        exprs.append(("dashboard:" + p["title"], t["expr"]))
a = yaml.safe_load(open(S + "/deploy/prometheus/alerts.yaml"))
for g in a["groups"]:
    for r in g["rules"]:
        exprs.append(("alert:" + r["alert"], r["expr"]))
problems, n_sel = [], 0
GLOBAL = {"instance", "job", "le"}


def walk(e, where, grouping=None):
    global n_sel
    if isinstance(e, P.MatrixSelector):
        secs = e.range.total_seconds()
        if secs < 20:
            problems.append(f"{where}: rate window {secs}s < 4x scrape interval")
        walk(e.vector_selector, where, grouping)
        return
    if isinstance(e, P.VectorSelector):
        n_sel += 1
        name = e.name
        if name not in fams:
            problems.append(f"{where}: metric {name} not exported")
            return
        labels = fams[name] | GLOBAL | ({"le"} if name.endswith("_bucket") else set())
        for m in e.matchers.matchers:
            if m.name not in labels:
                problems.append(f"{where}: {name} has no label {m.name}")
                continue
            seen = vals.get((name, m.name), set())
            for alt in m.value.split("|"):
                if any(c in alt for c in ".*+?[("):
                    if not any(re.fullmatch(alt, v) for v in seen) and not re.search(r"`(%s)`" % alt, doc):
                        problems.append(
                            f"{where}: {name}{{{m.name}=~{alt}}} matches no seen/documented value"
                        )
                elif alt not in seen and f"`{alt}`" not in doc:
                    problems.append(f"{where}: {name}{{{m.name}={alt!r}}} neither seen nor documented")
        for g in grouping or []:
            if g not in labels:
                problems.append(f"{where}: by ({g}) but {name} has no label {g}")
        return
    if isinstance(e, P.AggregateExpr):
        labs = list(e.modifier.labels) if e.modifier is not None else []
        walk(e.expr, where, labs)
        return
    if isinstance(e, P.Call):
        if e.func.name == "histogram_quantile":
            s = str(e.args[1])
            if "_bucket" not in s or not re.search(r"by \(le\)", s):
                problems.append(f"{where}: histogram_quantile without _bucket / by (le)")
        for x in e.args:
            walk(x, where, grouping)
        return
    if isinstance(e, P.BinaryExpr):
        walk(e.lhs, where, grouping)
        walk(e.rhs, where, grouping)
        return
    if isinstance(e, P.ParenExpr):
        walk(e.expr, where, grouping)
        return
    for attr in ("expr",):
        if hasattr(e, attr):
            walk(getattr(e, attr), where, grouping)


for where, ex in exprs:
    try:
        walk(P.parse(ex), where)
    except Exception as err:
        problems.append(f"{where}: does not parse: {err}")
if problems:
    print("DEFECT: " + " | ".join(problems))
else:
    print(
        f"OK: {len(exprs)} expressions parse; {n_sel} selectors name exported metrics with existing labels/values; quantiles use _bucket by (le); windows >= 20s"
    )
