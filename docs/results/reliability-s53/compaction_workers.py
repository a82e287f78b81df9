# ruff: noqa
# ruff: noqa
"""Agents naming no session that compact their history the way coding agents do: the compaction call asks the
model for a summary (a call that goes on from the conversation; 160 tokens), and the next call starts a new conversation
whose user message quotes that answer (the system prompt kept). 30 agents x 60 calls, compaction every 10
calls, on 2 tiny-cpu simulated replicas (reliability-s49/a's harness and agent shape). Prints, for `saga`
naming no session, `saga` naming its session, and round-robin: task time p50/max, the first call after a
compaction p50/p90, other calls p50, sessions the proxy knows. SAGA_TREE: the checkout (compiled).
Fifty-third session: the same agents in front of `saga serve --workers 2` (WORKERS, default 2), `saga` naming
no session and naming it (reliability-s52/compaction.py, with the proxy's worker count added)."""

import asyncio, json, os, sys, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reliability-s49", "a"))
WORKERS = os.environ.get("WORKERS", "2")
import aiohttp
import harness
from harness import TOOLS, chat, get, start_proxy, start_sims, stop_all, wait_ready, words

N, CALLS, CE = 30, 60, 10
PORT = int(os.environ.get("PORT", 25300))
q = lambda v, p: sorted(v)[min(len(v) - 1, int(len(v) * p))]


async def agent(sess, url, aid, headers, log):
    system = {"role": "system", "content": "You are a coding agent. " + words(200, 7)}
    msgs = [system, {"role": "user", "content": f"Task {aid}: " + words(40, 1000 + aid)}]
    extra = {"tools": TOOLS, "vllm_xargs": {"saga_sim_tool_turns": 1000}}
    compacted = False
    for i in range(CALLS):
        if i and i % CE == 0:  # ask for the summary, then start again from it
            ask = msgs + [{"role": "user", "content": "Summarize the work so far for a handoff."}]
            st, txt, dt, h = await chat(
                sess, url, ask, headers=headers, max_tokens=160, timeout=200, extra={"ignore_eos": True}
            )
            if st != 200:
                return st
            summary = json.loads(txt)["choices"][0]["message"]["content"] or ""
            note = "Another model worked on this task; its summary:\n" + summary + "\nGo on from there."
            msgs = [system, {"role": "user", "content": note}]
            compacted = True
        st, txt, dt, h = await chat(sess, url, msgs, headers=headers, timeout=200, extra=extra)
        log.append((aid, i, compacted, dt, h.get("X-Session-ID")))
        compacted = False
        if st != 200:
            return st
        m = json.loads(txt)["choices"][0]["message"]
        am = {"role": "assistant", "content": m.get("content")}
        if m.get("tool_calls"):
            am["tool_calls"] = m["tool_calls"]
        msgs.append(am)
        for tc in m.get("tool_calls") or ():
            msgs.append({"role": "tool", "tool_call_id": tc["id"], "content": words(60, aid * 1000 + i)})
        if not m.get("tool_calls"):
            msgs.append({"role": "user", "content": "continue " + words(10, i)})
    return 200


async def fleet(policy, base, named):
    reps = start_sims(base, 2)
    url = start_proxy(base + 10, reps, policy, extra=("--workers", WORKERS))
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as s:
            await wait_ready(s, url)
            log, t0 = [], time.time()

            async def one(a):
                status = await agent(s, url, a, {"X-Session-ID": f"agent-{a}"} if named else None, log)
                return time.time() - t0, status

            res = await asyncio.gather(*[one(a) for a in range(N)])
            st = await get(s, url, "/saga/v1/state")
            tct = [r[0] for r in res]
            comp = [l[3] for l in log if l[2]]
            other = [l[3] for l in log if not l[2] and l[1] > 0]
            ids = {l[4] for l in log}
            return (
                f"task time p50 {q(tct, 0.5):.1f}s max {max(tct):.1f}s; call after compaction p50 {q(comp, 0.5):.2f}s "
                f"p90 {q(comp, 0.9):.2f}s; other calls p50 {q(other, 0.5):.2f}s; failed {sum(r[1] != 200 for r in res)}; "
                f"session ids seen {len(ids)}; live reservations {st.get('admission', {}).get('live')}"
            )
    finally:
        stop_all()


async def main():
    os.makedirs("/tmp/reviewA", exist_ok=True)
    harness.TREE = os.environ.get("SAGA_TREE", "/work/main")
    out = []
    for name, pol, off, named in (
        ("saga no id", "saga", 0, False),
        ("saga id", "saga", 20, True),
    ):
        r = await fleet(pol, PORT + off, named)
        print(f"workers {WORKERS}, {name}: {r}", flush=True)
        out.append(f"workers {WORKERS}, {name}: {r}")
    print("RESULT: " + " | ".join(out))


try:
    asyncio.run(main())
finally:
    stop_all()
