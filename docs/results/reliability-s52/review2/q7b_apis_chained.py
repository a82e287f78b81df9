# ruff: noqa
"""q7 with the summary asked in a call that goes on from the conversation (as compacting agents ask it):
Responses API (stateless input lists) and /v1/messages. args: tree port"""

import sys

sys.path.insert(0, "/tmp/reviewQ")
from harness import stack, post_sync

tree, port = sys.argv[1], int(sys.argv[2])
SIM = ("--profile", "llama3-8b-h100", "--num-gpu-blocks-override", "600", "--time-scale", "20")
with stack(tree, port - 10, port, sim_args=SIM) as url:
    b = {
        "model": "saga-sim",
        "max_output_tokens": 60,
        "store": False,
        "instructions": "agent R",
        "input": [{"role": "user", "content": "task R"}],
    }
    d, s1, _, _ = post_sync(url, b, path="/v1/responses")
    first = "".join(
        c.get("text", "") for o in d["output"] if o.get("type") == "message" for c in o["content"]
    )
    ask = {
        **b,
        "input": [
            {"role": "user", "content": "task R"},
            {"role": "assistant", "content": first},
            {"role": "user", "content": "Summarize."},
        ],
    }
    d, s2, _, _ = post_sync(url, ask, path="/v1/responses")
    text = "".join(c.get("text", "") for o in d["output"] if o.get("type") == "message" for c in o["content"])
    _, s3, _, _ = post_sync(
        url, {**b, "input": [{"role": "user", "content": "Summary so far:\n" + text}]}, path="/v1/responses"
    )
    print(
        f"responses: summary call in its session: {s1 == s2}; summary {len(text)} chars; compacted conversation joined: {s1 == s3}"
    )
    m = {
        "model": "saga-sim",
        "max_tokens": 60,
        "system": "agent M",
        "messages": [{"role": "user", "content": "task M"}],
    }
    d, s1, _, _ = post_sync(url, m, path="/v1/messages")
    first = "".join(c.get("text", "") for c in d["content"] if c.get("type") == "text")
    msgs = [
        {"role": "user", "content": "task M"},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "Summarize."},
    ]
    d, s2, _, _ = post_sync(url, {**m, "messages": msgs}, path="/v1/messages")
    text = "".join(c.get("text", "") for c in d["content"] if c.get("type") == "text")
    _, s3, _, _ = post_sync(
        url, {**m, "messages": [{"role": "user", "content": "Summary so far:\n" + text}]}, path="/v1/messages"
    )
    print(
        f"messages: summary call in its session: {s1 == s2}; summary {len(text)} chars; compacted conversation joined: {s1 == s3}"
    )
