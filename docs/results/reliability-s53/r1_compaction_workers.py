# ruff: noqa
# ruff: noqa
"""N compacting agents (anonymous) run at once: 3 tool-loop calls, a summary call, then a NEW conversation
[system, user: 'Summary of the work so far:\\n' + summary] and 2 more calls. Counts post-compaction calls
filed under the agent's pre-compaction session, and latencies. args: tree port workers"""

import sys, threading, statistics, time

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
from harness import stack, get, post_sync

tree, port, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
N = 12
SIM = ("--profile", "llama3-8b-h100", "--num-gpu-blocks-override", "600", "--time-scale", "20")


def body(msgs, n):
    return {"model": "saga-sim", "max_tokens": n, "ignore_eos": True, "messages": msgs}


res = []
failed = []  # agents whose calls failed: counted, never left out of the denominator


def agent(url, i):
    try:
        run_agent(url, i)
    except Exception as e:
        failed.append(f"agent {i}: {e!r}")


def run_agent(url, i):
    msgs = [
        {"role": "system", "content": f"You are agent number {i}, a careful coder."},
        {"role": "user", "content": f"Task {i}: refactor module {i}"},
    ]
    for k in range(3):
        d, s, _, _ = post_sync(url, body(msgs, 300))
        msgs += [d["choices"][0]["message"], {"role": "user", "content": f"tool output {k} " + "x" * 200}]
        time.sleep(0.3)
    msgs[-1] = {"role": "user", "content": "Summarize the conversation so far."}
    d, s_sum, _, _ = post_sync(url, body(msgs, 120))
    summary = d["choices"][0]["message"]["content"]
    time.sleep(0.3)
    new = [msgs[0], {"role": "user", "content": "Summary of the work so far:\n" + summary}]
    d, s_new, _, lat = post_sync(url, body(new, 300))
    new += [d["choices"][0]["message"], {"role": "user", "content": "continue"}]
    d, s_new2, _, _ = post_sync(url, body(new, 300))
    res.append((s_sum, s_new, s_new2, lat))


with stack(tree, port - 10, port, sim_args=SIM, workers=workers) as url:
    t0 = time.time()
    ts = [threading.Thread(target=agent, args=(url, i)) for i in range(N)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    wall = time.time() - t0
    linked = sum(1 for a, b, c, _ in res if a == b)
    lats = sorted(r[3] for r in res) or [float("nan")]
    print(
        f"workers {workers}: post-compaction call in pre-compaction session {linked}/{N}; next call same as it {sum(1 for a, b, c, _ in res if b == c)}/{N}; failed {len(failed)} {failed[:3]}; "
        f"post-compaction latency p50 {statistics.median(lats):.3f}s max {lats[-1]:.3f}s; wall {wall:.1f}s; state {get(url + '/saga/v1/state').get('quoted_answers')}"
    )
