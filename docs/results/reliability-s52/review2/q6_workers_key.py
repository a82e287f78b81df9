# ruff: noqa
"""--workers N: key K, O in flight, conversation L split; L's next turns by body key, then naming its split id
back as X-Session-ID; Responses API turn (previous_response_id) of a split conversation. args: tree port workers"""

import sys, threading, time

sys.path.insert(0, "/tmp/reviewQ")
from harness import stack, get, post_sync

tree, port, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
SIM = ("--profile", "llama3-8b-h100", "--num-gpu-blocks-override", "600", "--time-scale", "20")
K = "key-w"
with stack(tree, port - 10, port, sim_args=SIM, workers=w) as url:
    sysm = {"role": "system", "content": "You are a helpful assistant."}

    def call(msgs, n=20, h=None):
        d, s, rep, _ = post_sync(
            url,
            {
                "model": "saga-sim",
                "max_tokens": n,
                "ignore_eos": True,
                "prompt_cache_key": K,
                "messages": msgs,
            },
            h,
        )
        return d["choices"][0]["message"]["content"], s, rep

    t = threading.Thread(target=lambda: call([sysm, {"role": "user", "content": "O task"}], 3000))
    t.start()
    time.sleep(0.15)
    L = [sysm, {"role": "user", "content": "L task"}]
    a, s1, r1 = call(L)
    print("L first", s1, r1)
    L += [{"role": "assistant", "content": a}, {"role": "user", "content": "more"}]
    a, s, r = call(L)
    print("L turn 2 (key)   ", s, r, s == s1)
    L += [{"role": "assistant", "content": a}, {"role": "user", "content": "more"}]
    _, s, r = call(L, h={"X-Session-ID": s1})
    print("L turn 3 (header)", s, r, s == s1)

    # Responses API under the key
    def resp(inp, prev=None, n=20):
        b = {"model": "saga-sim", "max_output_tokens": n, "input": inp, "prompt_cache_key": K, "store": True}
        if prev:
            b["previous_response_id"] = prev
        d, s, r, _ = post_sync(url, b, path="/v1/responses")
        return d["id"], s, r

    t2 = threading.Thread(
        target=lambda: call(
            [
                sysm,
                {"role": "user", "content": "O task"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "long"},
            ],
            3000,
        )
    )
    t2.start()
    time.sleep(0.15)
    rid, rs1, rr = resp("R conversation start")
    print("Responses first ", rs1, rr)
    rid2, rs2, rr2 = resp("next", rid)
    print("Responses turn 2", rs2, rr2, rs2 == rs1)
    t.join()
    t2.join()
    ss = get(url + "/saga/v1/sessions?limit=100")["sessions"]
    print("listed:", sorted((x.get("session_id") or x.get("id")) for x in ss))
