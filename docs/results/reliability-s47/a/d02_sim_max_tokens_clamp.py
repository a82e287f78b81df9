# ruff: noqa
"""DEFECT check: vLLM 0.32 clamps max_tokens to the room left in the context
(vllm/entrypoints/serve/utils/api_utils.py get_max_tokens: min(max_model_len - input_length, max_tokens, ...))
and answers 200 with finish_reason "length"; it refuses only a prompt that fills the context or a
max_tokens > max_model_len. The simulated replica refuses prompt + max_tokens > max_model_len with 400.
Expected values observed on the real vLLM (--max-model-len 2048)."""

import sys

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
from common import MODEL, post, report, sim

CASES = [  # (label, path, body, vLLM status, vLLM completion_tokens or None)
    (
        "completions 2047-token prompt, max_tokens 2",
        "/v1/completions",
        {"model": MODEL, "prompt": [5] * 2047, "max_tokens": 2},
        200,
        1,
    ),
    (
        "completions 2047-token prompt, default max_tokens (16)",
        "/v1/completions",
        {"model": MODEL, "prompt": [5] * 2047},
        200,
        1,
    ),
    (
        "completions 2000-token prompt, max_tokens 100",
        "/v1/completions",
        {"model": MODEL, "prompt": [5] * 2000, "max_tokens": 100, "ignore_eos": True},
        200,
        48,
    ),
    (
        "chat, max_tokens 2040 (< max_model_len, > room)",
        "/v1/chat/completions",
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 2040,
            "ignore_eos": True,
        },
        200,
        None,
    ),
    (
        "max_tokens above max_model_len",
        "/v1/completions",
        {"model": MODEL, "prompt": [5] * 10, "max_tokens": 5000},
        400,
        None,
    ),
]
with sim() as port:
    problems = []
    for label, path, body, status, completion in CASES:
        st, j, raw = post(port, path, body)
        if st != status:
            problems.append(f"{label}: sim {st} (vLLM {status}): {raw[:110]!r}")
        elif st == 200 and completion is not None and j["usage"]["completion_tokens"] != completion:
            problems.append(
                f"{label}: sim completion_tokens {j['usage']['completion_tokens']} (vLLM {completion})"
            )
report(problems, "simulated replica clamps max_tokens to the context room as vLLM does")
