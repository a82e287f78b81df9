# ruff: noqa
"""Fleet of N anonymous agents, one system prompt (one agent type). Each worker A_i does 2 calls (the 2nd goes on
from the 1st), then its tool/user phase. An orchestrator starts a fresh agent B_i of the same type whose first user
message hands it A_i's latest answer. Then A_i (its tool done 0.3 s later) and B_i both go on, 4 turns each, all at once.
Prints: how many B_i joined A_i's session, distinct sessions, phase-2 mean/max conversation time. args: tree port [N TURNS TOKENS]"""

import sys, time, threading, statistics

sys.path.insert(0, "/tmp/reviewR")
from harness import stack, get, post_sync

SIM = ("--profile", "llama3-8b-h100", "--num-gpu-blocks-override", "600", "--time-scale", "20")
N = int(sys.argv[3]) if len(sys.argv) > 3 else 6
TURNS = int(sys.argv[4]) if len(sys.argv) > 4 else 4
TOK = int(sys.argv[5]) if len(sys.argv) > 5 else 250
SYS = {"role": "system", "content": "You are a software engineering agent. Use the tools when needed."}


def body(msgs, n):
    return {"model": "saga-sim", "max_tokens": n, "ignore_eos": True, "messages": msgs}


tree, port = sys.argv[1], int(sys.argv[2])
with stack(tree, port - 10, port, sim_args=SIM) as url:
    A, last, sa = {}, {}, {}

    def worker(i):
        m = [SYS, {"role": "user", "content": f"Implement feature {i} in module_{i}.py"}]
        d, s, _, _ = post_sync(url, body(m, 300))
        m += [d["choices"][0]["message"], {"role": "user", "content": "ok, now write the tests"}]
        d, s, _, _ = post_sync(url, body(m, 300))
        m += [d["choices"][0]["message"]]
        A[i], last[i], sa[i] = m, d["choices"][0]["message"]["content"], s

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(N)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    longl = [sum(1 for l in last[i].split("\n") if len(l.strip()) >= 32) for i in range(N)]
    sess, times = {}, []

    def go(name, m):
        if name[0] == "A":
            time.sleep(0.3)  # A's tool runs 0.3 s; B's first call comes in meanwhile
        t0 = time.time()
        ids = []
        for k in range(TURNS):
            d, s, _, _ = post_sync(url, body(m, TOK))
            ids.append(s)
            m += [d["choices"][0]["message"], {"role": "user", "content": f"step {k} done, continue"}]
        times.append(time.time() - t0)
        sess[name] = ids

    Bm = {
        i: [
            SYS,
            {"role": "user", "content": "You take over from another agent. Its latest report:\n" + last[i]},
        ]
        for i in range(N)
    }
    for i in range(N):
        A[i].append({"role": "user", "content": "also handle the edge case for empty input"})
    ts = [threading.Thread(target=go, args=(f"A{i}", A[i])) for i in range(N)] + [
        threading.Thread(target=go, args=(f"B{i}", Bm[i])) for i in range(N)
    ]
    t0 = time.time()
    [t.start() for t in ts]
    [t.join() for t in ts]
    wall = time.time() - t0
    joined = sum(1 for i in range(N) if sess[f"B{i}"][0] == sa[i])
    distinct = len({x for v in sess.values() for x in v})
    time.sleep(0.5)
    st = get(url + "/saga/v1/state")
    print(
        f"long lines in A answers {longl}; B joined A: {joined}/{N}; distinct sessions in phase 2: {distinct} (of {2 * N} conversations); "
        f"phase-2 conv time mean {statistics.mean(times):.2f}s max {max(times):.2f}s wall {wall:.2f}s; quoted {st.get('quoted_answers')} in_flight {st.get('in_flight')}"
    )
