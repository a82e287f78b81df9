# ruff: noqa
"""`"n": null`: simulator (AFTER) vs real vLLM (VLLM_URL), chat and completions, whole and streamed."""

import os, sys, json, subprocess, signal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *


def probe(url, path, stream):
    b = '{"model":"saga-sim",%s,"max_tokens":3,"temperature":0.8,"stream":%s,"n":null}' % (
        '"messages":[{"role":"user","content":"hi"}]' if "chat" in path else '"prompt":"hi"',
        "true" if stream else "false",
    )
    st, txt, _ = post(url, None, path=path, rawbody=b.encode())
    return st


sim = subprocess.Popen(
    ["python3", "-m", "proxy", "sim", "--replicas", "1", "--base-port", "27820", "--time-scale", "50"],
    cwd=AFTER,
    start_new_session=True,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.STDOUT,
)
try:
    wait_http("http://127.0.0.1:27820/health")
    r = {}
    for path in ("/v1/chat/completions", "/v1/completions"):
        for stream in (False, True):
            r[(path, stream)] = (
                probe("http://127.0.0.1:27820", path, stream),
                probe(os.environ.get("VLLM_URL", "http://127.0.0.1:27900"), path, stream),
            )
            print(
                path,
                "stream" if stream else "whole",
                "sim",
                r[(path, stream)][0],
                "vllm",
                r[(path, stream)][1],
                flush=True,
            )
finally:
    os.killpg(sim.pid, signal.SIGTERM)
    sim.wait(10)
bad = [k for k, v in r.items() if v[0] != v[1]]
print(
    "DEFECT" if bad else "OK",
    '"n": null status sim/vllm:',
    {f"{k[0]}{'-stream' if k[1] else ''}": v for k, v in r.items()},
)
