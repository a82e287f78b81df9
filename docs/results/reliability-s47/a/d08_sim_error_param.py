# ruff: noqa
"""DEFECT check (minor): vLLM 0.32's errors name the parameter (`error.param`) and its validation messages
append "(parameter=..., value=...)" (VLLMValidationError, vllm/exceptions.py); the simulated replica sends
param null for the same refusals. Clients and the proxy's tests that read `param` see a difference."""

import sys

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
from common import MODEL, post, report, sim

C = lambda **kw: {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, **kw}
CASES = [  # (label, path, body, vLLM status, vLLM error.param)
    ("max_tokens 0", "/v1/chat/completions", C(max_tokens=0), 400, "max_tokens"),
    ("max_tokens > max_model_len", "/v1/chat/completions", C(max_tokens=10**9), 400, "max_tokens"),
    ("unknown model", "/v1/chat/completions", C(model="nope"), 404, "model"),
    (
        "prompt over max_model_len",
        "/v1/completions",
        {"model": MODEL, "prompt": [5] * 2100, "max_tokens": 3},
        400,
        "input_tokens",
    ),
]
with sim() as port:
    problems = []
    for label, path, body, status, param in CASES:
        st, j, raw = post(port, path, body)
        got = (j or {}).get("error", {}).get("param") if isinstance(j, dict) else None
        if st != status or got != param:
            problems.append(f"{label}: sim {st} param={got!r}; vLLM {status} param={param!r}")
report(problems, "simulated replica's error param matches vLLM's")
