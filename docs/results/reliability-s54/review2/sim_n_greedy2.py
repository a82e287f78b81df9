# ruff: noqa
"""n=2 at edge temperatures (raw JSON): simulator (NOW) vs real vLLM status, chat and completions, also n=1."""

import os, sys, json, subprocess, signal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *

TREE = os.environ.get("TREE", "/tmp/snap54c")
VLLM = os.environ.get("VLLM_URL", "http://127.0.0.1:27900")
TEMPS = [
    "-0.0",
    "0.0",
    '"0"',
    '"0.0"',
    "5e-324",
    "1e-300",
    "1e-9",
    '"1e-6"',
    "null",
    "false",
    "true",
    "-1e-9",
    "0e5",
    "1e-5",
    "9.99e-6",
]
sim = subprocess.Popen(
    ["python3", "-m", "proxy", "sim", "--replicas", "1", "--base-port", "27831", "--time-scale", "50"],
    cwd=TREE,
    start_new_session=True,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.STDOUT,
)
bad = []
try:
    wait_http("http://127.0.0.1:27831/health")
    for path in ("/v1/chat/completions", "/v1/completions"):
        for n in ("2", "1"):
            for t in TEMPS:
                inner = '"messages":[{"role":"user","content":"hi"}]' if "chat" in path else '"prompt":"hi"'
                raw = (
                    '{"model":"saga-sim",%s,"max_tokens":2,"n":%s,"temperature":%s}' % (inner, n, t)
                ).encode()
                s = post("http://127.0.0.1:27831", None, path=path, rawbody=raw)
                v = post(VLLM, None, path=path, rawbody=raw)
                cs = len(json.loads(s[1])["choices"]) if s[0] == 200 else 0
                cv = len(json.loads(v[1])["choices"]) if v[0] == 200 else 0
                flag = "" if (s[0], cs) == (v[0], cv) else "  <-- differs"
                if flag:
                    bad.append((path, n, t, s[0], v[0]))
                print(
                    f"{path:22} n={n} temperature={t:8} sim={s[0]}/{cs} vllm={v[0]}/{cv}{flag}",
                    (v[1][:80] if v[0] != 200 else b"").decode(errors="replace").replace("\n", " "),
                    flush=True,
                )
finally:
    os.killpg(sim.pid, signal.SIGTERM)
    sim.wait(10)
print("DEFECT" if bad else "OK", "edge temperatures, sim vs vllm (status/choices) differ in", len(bad), bad)
