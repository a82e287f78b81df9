# ruff: noqa
"""DEFECT check: the simulated replica accepts requests that vLLM 0.32 refuses with 400, so a client (or a
test) that works against the simulator fails against vLLM. vLLM's checks: SamplingParams._verify_args
(vllm/sampling_params.py: temperature >= 0, top_p in (0, 1]), the request models' validators
(vllm/entrypoints/openai/chat_completion/protocol.py: top_logprobs needs logprobs; pydantic types of
stop/seed/temperature/message content), completion suffix (FIM only), token ids in vocabulary and >= 0.
Statuses observed on the real vLLM (tiny Llama, tests/real_vllm flags)."""

import sys

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
from common import MODEL, post, report, sim

C = lambda **kw: {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, **kw}
P = lambda **kw: {"model": MODEL, "prompt": "hello", "max_tokens": 3, **kw}
CASES = [  # (label, path, body, vLLM status, vLLM param)
    ("temperature -1", "/v1/chat/completions", C(temperature=-1), 400, "temperature"),
    ("temperature 'hot'", "/v1/chat/completions", C(temperature="hot"), 400, "body.temperature"),
    ("top_p 2", "/v1/chat/completions", C(top_p=2), 400, "top_p"),
    ("top_logprobs without logprobs", "/v1/chat/completions", C(top_logprobs=2), 400, "top_logprobs"),
    ("stop 5", "/v1/chat/completions", C(stop=5), 400, "body.stop"),
    ("seed 'x'", "/v1/chat/completions", C(seed="x"), 400, "body.seed"),
    ("message content 5", "/v1/chat/completions", C(messages=[{"role": "user", "content": 5}]), 400, None),
    ("completion suffix", "/v1/completions", P(suffix="x"), 400, "suffix"),
    ("token id out of vocabulary", "/v1/completions", P(prompt=[999999]), 400, None),
    (
        "assistant tool call without function.arguments",
        "/v1/chat/completions",
        C(
            messages=[
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f"}}],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "ok"},
            ]
        ),
        400,
        "body.0.ChatCompletionMessageFunctionToolCallParam.function",
    ),
    ("negative token id", "/v1/completions", P(prompt=[-1]), 400, "body.prompt.0"),
]
with sim() as port:
    problems = []
    for label, path, body, status, param in CASES:
        st, j, raw = post(port, path, body)
        if st != status:
            problems.append(f"{label}: sim {st}, vLLM {status} (param={param})")
report(problems, "simulated replica refuses the invalid sampling values vLLM refuses")
