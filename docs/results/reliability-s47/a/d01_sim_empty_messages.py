# ruff: noqa
"""DEFECT check: the simulated replica accepts an empty `messages` list; vLLM 0.32 answers 400
("Cannot apply chat template to an empty conversation. Provide at least one message.") on
/v1/chat/completions (OpenAI error shape) and on /v1/messages (Anthropic shape: {"type":"error",...}).
Observed on the real vLLM (tests/real_vllm flags) on 2026-12-07; recorded here as constants."""

import sys

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
from common import MODEL, post, report, sim

EXPECTED = {  # path -> (status, message) from the real vLLM
    "/v1/chat/completions": (
        400,
        "Cannot apply chat template to an empty conversation. Provide at least one message.",
    ),
    "/v1/messages": (
        400,
        "Cannot apply chat template to an empty conversation. Provide at least one message.",
    ),
}
with sim() as port:
    problems = []
    for path, (status, msg) in EXPECTED.items():
        st, j, raw = post(port, path, {"model": MODEL, "messages": [], "max_tokens": 3})
        if st != status:
            problems.append(f"sim {path} with messages=[] answered {st} (vLLM: {status} {msg!r})")
report(problems, "simulated replica refuses empty messages with 400 as vLLM does")
