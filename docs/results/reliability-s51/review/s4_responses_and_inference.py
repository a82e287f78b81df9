# ruff: noqa
# S4: spilled Responses API calls, then their continuations (previous_response_id) and the session's next solo call;
# chat calls naming no session (inferred): a spilled branch continued, then the session's next call.
import asyncio, json, sys

sys.path.insert(0, "/tmp/rev51")
from h import *

TREE = sys.argv[1] if len(sys.argv) > 1 else "/tmp/snap51"
P = int(sys.argv[2]) if len(sys.argv) > 2 else 24300


async def resp(s, url, body, hdr=None):
    st, txt, dt, h = await post(s, url, "/v1/responses", body, hdr)
    rid = None
    try:
        rid = json.loads(txt).get("id")
    except Exception:
        pass
    return st, rid, h.get("X-Saga-Replica"), h.get("X-Session-ID"), txt[:100]


async def main():
    sp, reps = start_sims(TREE, P, 2)
    pp, url = start_proxy(TREE, P + 10, reps)
    lines = []
    bad = []
    try:
        async with aiohttp.ClientSession() as s:
            await wait_ready(s, url, 2)
            instr = "You are an agent. " + words(80, 11)
            hdr = {"X-Session-ID": "resp-1"}
            st, r0, bound, sid, _ = await resp(
                s,
                url,
                {"model": "saga-sim", "instructions": instr, "input": "start", "max_output_tokens": 16},
                hdr,
            )
            lt = asyncio.create_task(
                resp(
                    s,
                    url,
                    {
                        "model": "saga-sim",
                        "instructions": instr,
                        "input": "long",
                        "previous_response_id": r0,
                        "max_output_tokens": 500,
                    },
                    hdr,
                )
            )
            await asyncio.sleep(0.2)
            side = await asyncio.gather(
                *[
                    resp(
                        s,
                        url,
                        {
                            "model": "saga-sim",
                            "instructions": instr,
                            "input": f"side {i} " + words(30, i),
                            "max_output_tokens": 1800,
                        },
                        hdr,
                    )
                    for i in range(3)
                ]
            )
            l = await lt
            st0 = await get(s, url, "/saga/v1/state")
            spilled = [x for x in side if x[2] != bound]
            lines.append(
                f"resp bound={bound[-5:]} side replicas={[x[2][-5:] if x[2] else x[0] for x in side]} spills={st0['spills']}"
            )
            # continue each side response
            for x in side:
                c = await resp(
                    s,
                    url,
                    {
                        "model": "saga-sim",
                        "instructions": instr,
                        "input": "continue",
                        "previous_response_id": x[1],
                        "max_output_tokens": 16,
                    },
                    hdr,
                )
                lines.append(f"cont of {x[2][-5:]} -> {c[0]} {c[2][-5:] if c[2] else c[4]}")
                if c[0] != 200 or c[2] != x[2]:
                    bad.append(("cont", x[2], c))
            # next solo call, no previous id
            n = await resp(
                s,
                url,
                {"model": "saga-sim", "instructions": instr, "input": "solo again", "max_output_tokens": 16},
                hdr,
            )
            lines.append(f"solo after -> {n[0]} {n[2][-5:]}")
            # inferred sessions: chat calls naming no session
            sysm = {"role": "system", "content": "Inferred agent. " + words(80, 21)}
            u = {"role": "user", "content": "task " + words(20, 22)}
            c0 = await chat(s, url, [sysm, u], max_tokens=16)
            isid, ib = c0[3].get("X-Session-ID"), c0[3].get("X-Saga-Replica")
            a0 = json.loads(c0[1])["choices"][0]["message"]
            m1 = [
                sysm,
                u,
                {"role": "assistant", "content": a0.get("content") or ""},
                {"role": "user", "content": "next " + words(10, 23)},
            ]
            lt = asyncio.create_task(chat(s, url, m1, max_tokens=500))
            await asyncio.sleep(0.2)
            branches = await asyncio.gather(
                *[
                    chat(
                        s,
                        url,
                        m1
                        + [
                            {"role": "assistant", "content": "x"},
                            {"role": "user", "content": f"branch {i} " + words(40, 30 + i)},
                        ],
                        max_tokens=1800,
                    )
                    for i in range(3)
                ]
            )
            await lt
            lines.append(
                f"inferred sid={isid} bound={ib[-5:]} branches sid/replica={[(b[3].get('X-Session-ID') == isid, b[3].get('X-Saga-Replica')[-5:]) for b in branches]}"
            )
            for i, b in enumerate(branches):
                if b[0] != 200:
                    bad.append(("branch", b[0], b[1][:80]))
                    continue
                ans = json.loads(b[1])["choices"][0]["message"].get("content") or ""
                m2 = m1 + [
                    {"role": "assistant", "content": "x"},
                    {"role": "user", "content": f"branch {i} " + words(40, 30 + i)},
                    {"role": "assistant", "content": ans},
                    {"role": "user", "content": "go on"},
                ]
                c = await chat(s, url, m2, max_tokens=16)
                lines.append(
                    f"branch{i} on {b[3].get('X-Saga-Replica')[-5:]} continued -> {c[0]} sid_same={c[3].get('X-Session-ID') == isid} on {c[3].get('X-Saga-Replica', '')[-5:]}"
                )
                if c[0] != 200 or c[3].get("X-Session-ID") != isid:
                    bad.append(("branch-cont", c[0], c[3].get("X-Session-ID")))
            st = await quiesce_state(s, url, 2)
            lines.append(f"end={summarize(st)}")
    finally:
        stop_all()
    print(("DEFECT" if bad else "OK") + f": tree={TREE} bad={bad} | " + " | ".join(lines))


asyncio.run(main())
