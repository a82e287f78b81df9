# ruff: noqa
"""Static consistency: SAGA's listen port (config/ConfigMap) == container port == Service targetPort == scrape
annotation == compose Prometheus target == Dockerfile EXPOSE/HEALTHCHECK; vLLM port == discovery port == sim
--base-port == headless Service; terminationGracePeriodSeconds / stop_grace_period >= preStop sleep +
shutdown_grace_s (the running default, from `serve --help`)."""

import re, subprocess, sys, yaml

S = "/tmp/snap45b"
probs = []
L = lambda p: list(yaml.safe_load_all(open(S + "/" + p)))
dep = L("deploy/k8s/base/saga-deployment.yaml")[0]
svc = L("deploy/k8s/base/saga-service.yaml")[0]
cm = yaml.safe_load(L("deploy/k8s/base/saga-configmap.yaml")[0]["data"]["saga.yaml"])
ctr = dep["spec"]["template"]["spec"]["containers"][0]
cport = {p["name"]: p["containerPort"] for p in ctr["ports"]}
ann = dep["spec"]["template"]["metadata"]["annotations"]
if not (cm["port"] == cport["http"] == int(ann["prometheus.io/port"])):
    probs.append(f"saga port cm={cm['port']} ctr={cport} ann={ann}")
if svc["spec"]["ports"][0]["targetPort"] not in ("http", cm["port"]):
    probs.append("service targetPort")
for probe in ("readinessProbe", "livenessProbe"):
    pr = ctr[probe]
    port = (pr.get("httpGet") or pr.get("tcpSocket"))["port"]
    if port not in cport and port != cm["port"]:
        probs.append(f"{probe} port {port}")
vs = L("deploy/k8s/base/vllm-statefulset.yaml")[0]
vsvc = L("deploy/k8s/base/vllm-headless-service.yaml")[0]
vc = vs["spec"]["template"]["spec"]["containers"][0]
vport = vc["ports"][0]["containerPort"]
if not (
    vport
    == cm["discovery"]["port"]
    == int(vc["args"][vc["args"].index("--port") + 1])
    == vsvc["spec"]["ports"][0]["port"]
):
    probs.append("vllm port mismatch")
ov = L("deploy/k8s/overlays/cpu-demo/vllm-simulated.yaml")[0]["spec"]["template"]["spec"]["containers"][0]
if int(ov["args"][ov["args"].index("--base-port") + 1]) != vport:
    probs.append("overlay sim base-port != vllm port")
# grace
help_ = subprocess.run(
    [sys.executable, "-m", "proxy.cli", "serve", "--help"], cwd=S, capture_output=True, text=True
).stdout
grace = float(re.search(r"SIGHUP \(default: ([\d.]+)", help_.replace("\n", " ").replace("  ", " ")).group(1))
pre = int(ctr["lifecycle"]["preStop"]["exec"]["command"][1])
tgp = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
if tgp < pre + grace:
    probs.append(f"terminationGracePeriodSeconds {tgp} < preStop {pre} + shutdown_grace_s {grace}")
if "shutdown_grace_s" in cm and cm["shutdown_grace_s"] + pre > tgp:
    probs.append("cm shutdown_grace_s too long")
for f, sim_svc in (("deploy/compose/cpu-demo.yaml", "sim-0"), ("deploy/compose/gpu.yaml", "vllm-0")):
    c = yaml.safe_load(open(S + "/" + f))
    sg = c["services"]["saga"]
    spg = int(sg["stop_grace_period"].rstrip("s"))
    if spg < grace:
        probs.append(f"{f}: stop_grace_period {spg} < shutdown_grace_s {grace}")
    cfgfile = [v.split(":")[0] for v in sg["volumes"]][0]
    scfg = yaml.safe_load(open(S + "/deploy/compose/" + cfgfile.lstrip("./")))
    if sg["ports"] != [f"{scfg['port']}:{scfg['port']}"]:
        probs.append(f"{f}: ports {sg['ports']} vs config port {scfg['port']}")
    prom = [v.split(":")[0] for v in c["services"]["prometheus"]["volumes"]][0]
    pc = yaml.safe_load(open(S + "/deploy/compose/" + prom.lstrip("./")))
    tg = {j["job_name"]: j["static_configs"][0]["targets"] for j in pc["scrape_configs"]}
    if tg["saga"] != [f"saga:{scfg['port']}"]:
        probs.append(f"{prom}: saga target {tg['saga']}")
    reps = [r.split("//")[1] for r in scfg["replicas"]]
    if sorted(tg["vllm"]) != sorted(reps):
        probs.append(f"{prom}: vllm targets {tg['vllm']} vs saga replicas {reps}")
    svcs = [s for s in c["services"] if s.startswith(sim_svc[:-1])]
    if sorted(s + ":8000" for s in svcs) != sorted(reps):
        probs.append(f"{f}: services {svcs} vs replicas {reps}")
df = open(S + "/deploy/Dockerfile").read()
dflt = yaml.safe_load(open(S + "/deploy/saga-default.yaml"))
if f"EXPOSE {dflt['port']}" not in df or f"127.0.0.1:{dflt['port']}/health" not in df:
    probs.append("Dockerfile EXPOSE/HEALTHCHECK port != saga-default port")
print(
    ("DEFECT: " + " | ".join(probs))
    if probs
    else f"OK: ports consistent (saga {cm['port']}, vllm {vport}) across k8s/compose/prometheus/Dockerfile; grace {tgp} >= {pre}+{grace}, compose stop_grace_period >= {grace}"
)
