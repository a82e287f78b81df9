# ruff: noqa
"""n=2 at various temperatures (absent, 0, 1e-6, 1e-4, 0.01): simulator (AFTER) vs real vLLM status."""

import os, sys, json, subprocess, signal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *

sim = subprocess.Popen(
    ["python3", "-m", "proxy", "sim", "--replicas", "1", "--base-port", "26830", "--time-scale", "50"],
    cwd=AFTER,
    start_new_session=True,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.STDOUT,
)
r = {}
try:
    wait_http("http://127.0.0.1:26830/health")
    for t in (None, 0, 1e-6, 1e-5, 1e-4, 0.01):
        for path in ("/v1/chat/completions", "/v1/completions"):
            b = {"model": "saga-sim", "max_tokens": 3, "n": 2}
            if t is not None:
                b["temperature"] = t
            if "chat" in path:
                b["messages"] = [{"role": "user", "content": "hi"}]
            else:
                b["prompt"] = "hi"
            s = post("http://127.0.0.1:26830", b, path=path)[0]
            v = post(os.environ.get("VLLM_URL", "http://127.0.0.1:26900"), b, path=path)[0]
            r[(t, path)] = (s, v)
            print(t, path, "sim", s, "vllm", v, flush=True)
finally:
    os.killpg(sim.pid, signal.SIGTERM)
    sim.wait(10)
bad = [k for k, v in r.items() if v[0] != v[1]]
print("DEFECT" if bad else "OK", "n=2 by temperature, sim/vllm statuses differ in", bad)
