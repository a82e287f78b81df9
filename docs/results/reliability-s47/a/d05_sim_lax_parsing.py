# ruff: noqa
"""DEFECT check: the simulated replica's "lax" decoding (msgspec strict=False, simulator/http_common.py
decode) is not pydantic's lax mode, which vLLM's request models use. Observed on the real vLLM:
bools are ints ("max_tokens": true is 1), ints are read from strings with spaces (" 3"), bools from
"yes"/"on"/"y"/"t"/"no"/"off"/"f" and 1.0; but "null" and "1e1" are not ints (400)."""

import sys

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
from common import MODEL, post, report, sim

C = lambda **kw: {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, **kw}
CASES = [  # (label, body, vLLM status)
    ("max_tokens true", C(max_tokens=True), 200),
    ("max_completion_tokens true", C(max_completion_tokens=True), 200),
    ("n true", C(n=True), 200),
    ("priority true", C(priority=True), 200),
    ("max_tokens ' 3'", C(max_tokens=" 3"), 200),
    ("ignore_eos 'yes'", C(ignore_eos="yes"), 200),
    ("stream 'yes'", C(stream="yes"), 200),
    ("stream 'off'", C(stream="off"), 200),
    ("stream 1.0", C(stream=1.0), 200),
    ("max_tokens 'null'", C(max_tokens="null"), 400),
    ("max_tokens '1e1'", C(max_tokens="1e1"), 400),
]
with sim() as port:
    problems = []
    for label, body, status in CASES:
        st, j, raw = post(port, "/v1/chat/completions", body)
        if st != status:
            problems.append(f"{label}: sim {st}, vLLM {status}")
report(problems, "simulated replica reads loose values as vLLM (pydantic lax mode) does")
