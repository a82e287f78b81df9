# ruff: noqa
"""False link: agent A (anonymous) answers; while A runs its tool (no call in flight), an orchestrator starts a
NEW reviewer agent R whose first user message quotes A's answer (e.g. 'review this worker output').
Then A and R go on in parallel. Which sessions?"""

import sys, json, time, threading

sys.path.insert(0, "/tmp/reviewQ")
from harness import stack, get, post_sync

SIM = ("--profile", "llama3-8b-h100", "--num-gpu-blocks-override", "600", "--time-scale", "20")


def body(msgs, n=60):
    return {"model": "saga-sim", "max_tokens": n, "ignore_eos": True, "messages": msgs}


def run(url, role):
    sa = [
        {"role": "system", "content": "You are coding agent A."},
        {"role": "user", "content": "Fix the bug in parser.py"},
    ]
    d, s_a1, _, _ = post_sync(url, body(sa))
    ta = d["choices"][0]["message"]["content"]
    sr = (
        [
            {"role": "system", "content": "You are a code reviewer."},
            {"role": role, "content": "Review this output of another agent:\n" + ta},
        ]
        if role == "user"
        else [
            {"role": "system", "content": "You are a code reviewer."},
            {"role": "user", "content": "Review the worker's output."},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "read_output", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": ta},
        ]
    )
    d, s_r1, _, _ = post_sync(url, body(sr))
    tr = d["choices"][0]["message"]["content"]
    out = {}

    def go(name, msgs):
        out[name] = post_sync(url, body(msgs, 200))[1]

    ts = [
        threading.Thread(
            target=go,
            args=(
                "A2",
                sa
                + [{"role": "assistant", "content": ta}, {"role": "user", "content": "tests pass, continue"}],
            ),
        ),
        threading.Thread(
            target=go,
            args=("R2", sr + [{"role": "assistant", "content": tr}, {"role": "user", "content": "go on"}]),
        ),
    ]
    [t.start() for t in ts]
    [t.join() for t in ts]
    print(
        f"[{role} quote] A1 {s_a1[:12]}  R1 {s_r1[:12]}  A2 {out['A2'][:12]}  R2 {out['R2'][:12]}  R joined A: {s_r1 == s_a1}"
    )
    st = get(url + "/saga/v1/state")
    print("  quoted_answers", st.get("quoted_answers"))


tree, port = sys.argv[1], int(sys.argv[2])
with stack(tree, port - 10, port, sim_args=SIM) as url:
    run(url, "user")
    run(url, "tool")
