# ruff: noqa
"""Tenant a's anonymous agent answers; tenant b starts a new conversation quoting that answer.
mode keys: client API keys (sk-a/sk-b). mode header: no api_keys, X-Tenant-ID a / b."""

import sys, os, json

sys.path.insert(0, "/tmp/reviewQ")
from harness import stack, get, post_sync

tree, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if mode == "keys":
    os.environ["SAGA_API_KEYS"] = json.dumps({"sk-a": "team-a", "sk-b": "team-b"})
    H = {"a": {"Authorization": "Bearer sk-a"}, "b": {"Authorization": "Bearer sk-b"}}
else:
    H = {"a": {"X-Tenant-ID": "team-a"}, "b": {"X-Tenant-ID": "team-b"}}
SIM = ("--profile", "llama3-8b-h100", "--num-gpu-blocks-override", "600", "--time-scale", "20")


def body(msgs, n=60):
    return {"model": "saga-sim", "max_tokens": n, "ignore_eos": True, "messages": msgs}


with stack(tree, port - 10, port, sim_args=SIM) as url:
    d, s1, _, _ = post_sync(
        url,
        body([{"role": "system", "content": "agent of a"}, {"role": "user", "content": "secret task of a"}]),
        H["a"],
    )
    ta = d["choices"][0]["message"]["content"]
    d, s2, _, _ = post_sync(
        url,
        body(
            [{"role": "system", "content": "agent of b"}, {"role": "user", "content": "Continue from: " + ta}]
        ),
        H["b"],
    )
    print(f"[{mode}] a's session {s1[:14]}  b's new conversation {s2[:14]}  same: {s1 == s2}")
    for x in get(url + "/saga/v1/sessions?limit=100")["sessions"]:
        print(
            "  listed",
            (x.get("session_id") or x.get("id"))[:20],
            "tenant",
            x.get("tenant") or x.get("tenant_id"),
            "calls",
            x.get("calls", x.get("call_count")),
        )
    print("  quoted_answers", get(url + "/saga/v1/state").get("quoted_answers"))
