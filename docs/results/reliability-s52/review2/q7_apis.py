# ruff: noqa
"""Compaction linking over the Responses API (stateless input lists) and /v1/messages (user text and a
tool_result block quoting the summary)."""

import sys

sys.path.insert(0, "/tmp/reviewQ")
from harness import stack, post_sync

tree, port = sys.argv[1], int(sys.argv[2])
SIM = ("--profile", "llama3-8b-h100", "--num-gpu-blocks-override", "600", "--time-scale", "20")
with stack(tree, port - 10, port, sim_args=SIM) as url:
    # Responses API, stateless
    b = {
        "model": "saga-sim",
        "max_output_tokens": 60,
        "store": False,
        "instructions": "agent R",
        "input": [{"role": "user", "content": "task R"}],
    }
    d, s1, _, _ = post_sync(url, b, path="/v1/responses")
    text = "".join(c.get("text", "") for o in d["output"] if o.get("type") == "message" for c in o["content"])
    b2 = {**b, "input": [{"role": "user", "content": "Summary so far:\n" + text}]}
    _, s2, _, _ = post_sync(url, b2, path="/v1/responses")
    print(
        f"responses: answer {len(text)} chars; compacted conversation joined: {s1 == s2} ({s1[:14]} / {s2[:14]})"
    )
    # /v1/messages
    m = {
        "model": "saga-sim",
        "max_tokens": 60,
        "system": "agent M",
        "messages": [{"role": "user", "content": "task M"}],
    }
    d, s1, _, _ = post_sync(url, m, path="/v1/messages")
    text = "".join(c.get("text", "") for c in d["content"] if c.get("type") == "text")
    _, s2, _, _ = post_sync(
        url, {**m, "messages": [{"role": "user", "content": "Summary so far:\n" + text}]}, path="/v1/messages"
    )
    print(f"messages user text: joined: {s1 == s2}")
    d, s3, _, _ = post_sync(
        url,
        {**m, "system": "agent M2", "messages": [{"role": "user", "content": "task M2"}]},
        path="/v1/messages",
    )
    text = "".join(c.get("text", "") for c in d["content"] if c.get("type") == "text")
    msgs = [
        {"role": "user", "content": "review"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "read", "input": {}}]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": text}]}
            ],
        },
    ]
    _, s4, _, _ = post_sync(url, {**m, "system": "reviewer", "messages": msgs}, path="/v1/messages")
    print(f"messages tool_result quoting another agent's answer: joined it: {s3 == s4}")
