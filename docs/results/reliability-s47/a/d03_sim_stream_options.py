# ruff: noqa
"""DEFECT check: stream_options handling.
(a) vLLM answers 400 param=stream_options "Stream options can only be defined when `stream=True`."
    (vllm/entrypoints/openai/chat_completion/protocol.py and completion/protocol.py, validate_stream_options);
    the simulated replica ignores it and answers 200.
(b) with stream_options {"include_usage": true, "continuous_usage_stats": true} vLLM puts `usage` in every
    chunk (vllm/entrypoints/serve/utils/api_utils.py should_include_usage; chat_completion/serving.py
    include_continuous_usage); the simulated replica decodes the field but only sends the final usage chunk."""

import json, sys

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
from common import MODEL, post, report, sim

MSG = [{"role": "user", "content": "hi"}]
with sim() as port:
    problems = []
    for path, body in (
        ("/v1/chat/completions", {"model": MODEL, "messages": MSG, "max_tokens": 3}),
        ("/v1/completions", {"model": MODEL, "prompt": "hello", "max_tokens": 3}),
    ):
        st, j, raw = post(port, path, {**body, "stream_options": {"include_usage": True}})
        if st != 400:
            problems.append(
                f"{path}: stream_options without stream -> sim {st} (vLLM 400 param=stream_options)"
            )
        st, j, raw = post(
            port,
            path,
            {
                **body,
                "stream": True,
                "stream_options": {"include_usage": True, "continuous_usage_stats": True},
            },
        )
        chunks = [json.loads(e[6:]) for e in raw.decode().split("\n\n") if e.startswith("data: {")]
        content = [c for c in chunks if c.get("choices")]
        without = sum(1 for c in content if not c.get("usage"))
        if without:
            problems.append(
                f"{path}: continuous_usage_stats -> {without} of {len(content)} content chunks carry no usage (vLLM: every chunk has usage)"
            )
report(problems, "simulated replica validates and honours stream_options as vLLM does")
