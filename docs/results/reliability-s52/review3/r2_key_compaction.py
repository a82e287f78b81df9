# ruff: noqa
"""A conversation that sends its OWN prompt_cache_key (one per conversation, as Codex does) compacts its history.
Variant side=1: once, while its turn 2 streams, it makes a side call (title generation: [system, user 'title for ...'])
under the same key -- the key is then 'found shared'. Later compaction: Claude-Code-style [system, user 'continued...\\nSummary:...']
and Codex-style [system, developer, last kept user msg, user 'prefix\\n'+summary]. Which session do they land in?
args: tree port"""

import sys, json, time, threading

sys.path.insert(0, "/tmp/reviewR")
from harness import stack, get, post_sync

SIM = ("--profile", "llama3-8b-h100", "--num-gpu-blocks-override", "600", "--time-scale", "20")


def body(msgs, n, key):
    return {
        "model": "saga-sim",
        "max_tokens": n,
        "ignore_eos": True,
        "messages": msgs,
        "prompt_cache_key": key,
    }


def convo(url, key, side, style):
    S = {"role": "system", "content": "You are a coding agent. Be careful."}
    D = {"role": "developer", "content": "Sandbox: workspace-write. Approval: on-request."}
    msgs = [S, D, {"role": "user", "content": f"Task for {key}: fix the flaky test in test_io.py"}]
    seen = []
    d, s, _, _ = post_sync(url, body(msgs, 60, key))
    seen.append(("t1", s))
    msgs += [d["choices"][0]["message"], {"role": "user", "content": "now also update the changelog"}]
    out = {}

    def t2():
        out["t2"] = post_sync(url, body(msgs, 600, key))

    th = threading.Thread(target=t2)
    th.start()
    time.sleep(0.15)
    if side:
        _, ss, _, _ = post_sync(
            url,
            body(
                [
                    S,
                    {"role": "user", "content": "Write a 5-word title for: fix the flaky test in test_io.py"},
                ],
                10,
                key,
            ),
        )
        seen.append(("side", ss))
    th.join()
    d, s, _, _ = out["t2"]
    seen.append(("t2", s))
    msgs += [
        d["choices"][0]["message"],
        {"role": "user", "content": "please summarize the conversation so far"},
    ]
    d, s, _, _ = post_sync(url, body(msgs, 200, key))
    seen.append(("summary", s))
    summ = d["choices"][0]["message"]["content"]
    if style == "claude":
        new = [
            S,
            {
                "role": "user",
                "content": "This session is being continued from a previous conversation that ran out of context. The conversation is summarized below:\nSummary:\n"
                + summ,
            },
        ]
    else:
        new = [
            S,
            D,
            {"role": "user", "content": "now also update the changelog"},
            {
                "role": "user",
                "content": "Another language model started to solve this problem and produced a summary of its thinking process.\n"
                + summ,
            },
        ]
    d, s, _, _ = post_sync(url, body(new, 60, key))
    seen.append(("after-compaction", s))
    new += [d["choices"][0]["message"], {"role": "user", "content": "continue"}]
    d, s, _, _ = post_sync(url, body(new, 60, key))
    seen.append(("next", s))
    lost = [n for n, x in seen if x != key and n != "side"]
    print(
        f"side={side} style={style}: "
        + " ".join(f"{n}={x[-20:]}" for n, x in seen)
        + f" | calls not in key's session: {lost}"
    )


tree, port = sys.argv[1], int(sys.argv[2])
with stack(tree, port - 10, port, sim_args=SIM) as url:
    i = 0
    for side in (0, 1):
        for style in ("claude", "codex"):
            i += 1
            convo(url, f"conv-{i}", side, style)
    time.sleep(0.5)
    st = get(url + "/saga/v1/state")
    print(
        "state cache_keys",
        st.get("cache_keys"),
        "quoted",
        st.get("quoted_answers"),
        "in_flight",
        {k: v for k, v in st.items() if "flight" in k},
    )
