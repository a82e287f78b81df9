# ruff: noqa
"""DEFECT check: /v1/messages (Anthropic API) on the simulated replica vs vLLM 0.32:
(a) an unknown model: vLLM 404 in Anthropic's shape {"type":"error","error":{"type":"NotFoundError",...}}
    (vllm/entrypoints/anthropic/serving.py wraps its errors); the simulator answers OpenAI's
    {"error":{...,"code":404}} shape;
(b) no `model`: vLLM 400 (pydantic, `model` is a required field of AnthropicMessagesRequest); the simulator
    answers 200."""

import sys

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
from common import MODEL, post, report, sim

MSGS = [{"role": "user", "content": "hi"}]
with sim() as port:
    problems = []
    st, j, raw = post(port, "/v1/messages", {"model": "nope", "max_tokens": 3, "messages": MSGS})
    if st != 404 or not (
        isinstance(j, dict) and j.get("type") == "error" and j.get("error", {}).get("type") == "NotFoundError"
    ):
        problems.append(
            f"unknown model: sim {st} {raw[:100]!r}; vLLM 404 {{'type':'error','error':{{'type':'NotFoundError',...}}}}"
        )
    st, j, raw = post(port, "/v1/messages", {"max_tokens": 3, "messages": MSGS})
    if st != 400:
        problems.append(f"no model: sim {st}; vLLM 400 (body.model Field required)")
report(problems, "simulated /v1/messages errors match vLLM's")
