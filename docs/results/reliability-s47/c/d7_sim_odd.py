# ruff: noqa
"""Item 7: the simulated replica's lax int parsing (simulator/lax.py `_to_int`: int(text) of a decimal string)
raises ValueError past Python's 4,300-digit int limit, which no one catches: a 500 'Server got itself in
trouble' for a body like {"max_tokens": "111...1" (5,000 digits)} on chat, completions, /v1/messages and
/v1/responses. vLLM (pydantic) answers a 400 validation error. Also probes deep nesting. DEFECT on any 5xx."""

import sys, json
import os, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
LOGS = tempfile.mkdtemp(prefix="rev47c-")
sys.path.insert(0, HERE)
from h import *

reps = sims(1, 25730, scale=100)
P = 25730
M = [{"role": "user", "content": "hi"}]
big = "1" * 5000
cases = [
    ("/v1/chat/completions", {"model": "saga-sim", "messages": M, "max_tokens": big}),
    ("/v1/chat/completions", {"model": "saga-sim", "messages": M, "max_tokens": 4, "seed": big}),
    ("/v1/completions", {"model": "saga-sim", "prompt": "hi", "max_tokens": big}),
    ("/v1/messages", {"model": "saga-sim", "messages": M, "max_tokens": big}),
    ("/v1/responses", {"model": "saga-sim", "input": "hi", "max_output_tokens": big}),
]
bad = 0
for path, body in cases:
    s, _, b = req(P, path, body)
    print(path, list(body)[-1], s, b[:70])
    bad += s >= 500
deep = (
    b'{"model":"saga-sim","messages":[{"role":"user","content":"hi"}],"max_tokens":4,"x":'
    + b"[" * 100000
    + b"]" * 100000
    + b"}"
)
for path in ("/v1/chat/completions", "/tokenize", "/v1/messages"):
    s, _, b = req(P, path, deep)
    print(path, "deep", s, b[:70])
    bad += s >= 500
print(f"DEFECT: {bad} odd bodies got a 5xx from the simulated replica" if bad else "OK: no 5xx")
