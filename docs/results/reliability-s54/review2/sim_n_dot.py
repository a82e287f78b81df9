# ruff: noqa
"""n written "2." (and "2.", "3." forms): simulator (NOW) vs real vLLM, chat and completions."""

import os, sys, json, subprocess, signal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *

TREE = os.environ.get("TREE", "/tmp/snap54c")
VLLM = os.environ.get("VLLM_URL", "http://127.0.0.1:27900")
sim = subprocess.Popen(
    ["python3", "-m", "proxy", "sim", "--replicas", "1", "--base-port", "27832", "--time-scale", "50"],
    cwd=TREE,
    start_new_session=True,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.STDOUT,
)
bad = []
try:
    wait_http("http://127.0.0.1:27832/health")
    for path in ("/v1/chat/completions", "/v1/completions"):
        for stream in ("false", "true"):
            for f in ('"2."', '"3. "', '"+2"'):
                inner = '"messages":[{"role":"user","content":"hi"}]' if "chat" in path else '"prompt":"hi"'
                raw = (
                    '{"model":"saga-sim",%s,"max_tokens":2,"temperature":1,"stream":%s,"n":%s}'
                    % (inner, stream, f)
                ).encode()
                s = post("http://127.0.0.1:27832", None, path=path, rawbody=raw)[0]
                v = post(VLLM, None, path=path, rawbody=raw)[0]
                if s != v:
                    bad.append((path, stream, f, s, v))
                print(path, "stream" if stream == "true" else "whole", f, "sim", s, "vllm", v, flush=True)
finally:
    os.killpg(sim.pid, signal.SIGTERM)
    sim.wait(10)
print("DEFECT" if bad else "OK", "n forms, sim vs vllm status differ in", len(bad), bad)
