# ruff: noqa
"""DEFECT check (proxy): proxy/identity.py decodes `stream` and `stream_options.include_usage` with msgspec
strict=False and claims (data_structs.CallFields) "the proxy refuses no body vLLM serves". vLLM's pydantic
lax mode also reads "yes"/"on"/"y"/"t" as true, "no"/"off"/"f" as false and 1.0 as true; observed on the
real vLLM 0.32: 200 for each (streamed or whole). The proxy answers its own 400 (code invalid_request_body)
before forwarding. The replica here is a simulated one; the proxy's refusal does not depend on it (the
proxy never forwards these bodies)."""

import sys

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
from common import MODEL, post, proxy, report, sim

C = lambda **kw: {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, **kw}
CASES = [
    ("stream 'yes'", C(stream="yes")),
    ("stream 'on'", C(stream="on")),
    ("stream 't'", C(stream="t")),
    ("stream 'no'", C(stream="no")),
    ("stream 1.0", C(stream=1.0)),
    ("include_usage 'yes'", C(stream=True, stream_options={"include_usage": "yes"})),
]
with sim() as sp, proxy(sp) as pp:
    problems = []
    for label, body in CASES:
        st, j, raw = post(pp, "/v1/chat/completions", body)
        code = (j or {}).get("error", {}).get("code") if isinstance(j, dict) else None
        if st == 400 and code == "invalid_request_body":
            problems.append(
                f"{label}: proxy refused it itself (400 invalid_request_body); vLLM serves it (200)"
            )
report(problems, "proxy forwards every loose boolean vLLM accepts")
