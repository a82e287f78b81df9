# ruff: noqa
"""One app key K. Own conversation O runs a long call; meanwhile conversation L starts (split to K~..).
L goes on: normal turn, sliding window (first user message dropped), cache_control added on its first user
message (content parts). Then 1100 other conversations' first calls under K, then L's next normal turn."""

import sys, threading, time

sys.path.insert(0, "/tmp/reviewQ")
from harness import stack, get, post_sync

tree, port = sys.argv[1], int(sys.argv[2])
SIM = ("--profile", "llama3-8b-h100", "--num-gpu-blocks-override", "600", "--time-scale", "20")
K = "app-key-1"


def call(msgs, n=20):
    d, s, _, _ = post_sync(
        url_,
        {"model": "saga-sim", "max_tokens": n, "ignore_eos": True, "prompt_cache_key": K, "messages": msgs},
    )
    return d["choices"][0]["message"]["content"], s


with stack(tree, port - 10, port, sim_args=SIM) as url_:
    sysm = {"role": "system", "content": "You are a helpful assistant."}
    o = {}
    t = threading.Thread(
        target=lambda: o.update(r=call([sysm, {"role": "user", "content": "O: plan a trip"}], 3000))
    )
    t.start()
    time.sleep(0.15)
    L = [sysm, {"role": "user", "content": "L: write a poem about rust"}]
    a, s1 = call(L)
    t.join()
    print("O first        ", o["r"][1])
    print("L first        ", s1)
    L += [{"role": "assistant", "content": a}, {"role": "user", "content": "L turn 2"}]
    a, s = call(L)
    print("L normal turn  ", s, "same as L first:", s == s1)
    L += [{"role": "assistant", "content": a}, {"role": "user", "content": "L turn 3"}]
    _, s = call([sysm] + L[3:])
    print("L window slid  ", s, "same:", s == s1)
    cc = [
        sysm,
        {
            "role": "user",
            "content": [{"type": "text", "text": L[1]["content"], "cache_control": {"type": "ephemeral"}}],
        },
    ] + L[2:]
    _, s = call(cc)
    print("L cache_control", s, "same:", s == s1)

    def flood(k):
        for i in range(k, 1100, 4):
            post_sync(
                url_,
                {
                    "model": "saga-sim",
                    "max_tokens": 1,
                    "prompt_cache_key": K,
                    "messages": [sysm, {"role": "user", "content": f"other user {i}"}],
                },
            )

    ts = [threading.Thread(target=flood, args=(k,)) for k in range(4)]
    [x.start() for x in ts]
    [x.join() for x in ts]
    _, s = call(L)
    print("L after 1100 other conversations", s, "same:", s == s1)
    print("state cache_keys", get(url_ + "/saga/v1/state").get("cache_keys"))
