# ruff: noqa
"""One conversation, ONE prompt_cache_key of its own. It keeps a sliding window (system + last 4 messages),
so its first user message changes once the window slides. At turn 6 it fires two calls at once (e.g. two
parallel tool branches / a side call with the same history). Expected: every call stays in session 'conv-A'."""

import asyncio, sys, aiohttp

sys.path.insert(0, "/tmp/reviewK")
from harness import stack, get


async def call(http, url, msgs, key):
    body = {"model": "saga-sim", "max_tokens": 40, "messages": msgs, "prompt_cache_key": key}
    async with http.post(url + "/v1/chat/completions", json=body) as r:
        j = await r.json()
        return r.status, r.headers.get("X-Session-ID"), r.headers.get("X-Saga-Replica", "")[-5:], j


async def main(url):
    out = []
    async with aiohttp.ClientSession() as http:
        hist = []
        for turn in range(1, 13):
            hist.append({"role": "user", "content": f"turn {turn}: please continue the task " + "x " * 60})
            window = [{"role": "system", "content": "You are a coding agent."}] + hist[-4:]
            if turn == 6:
                res = await asyncio.gather(
                    call(http, url, window, "conv-A"), call(http, url, window, "conv-A")
                )
            else:
                res = [await call(http, url, window, "conv-A")]
            for st, sid, rep, j in res:
                print(f"turn {turn:2d} status {st} session {sid} replica {rep}")
            hist.append({"role": "assistant", "content": res[0][3]["choices"][0]["message"]["content"]})
        st = get(url + "/saga/v1/state")
        print(
            "distinct sessions:",
            len({s for s in [l.split()[4] for l in []]}) if False else "",
            "cache_keys",
            st.get("cache_keys"),
        )


tree, port = sys.argv[1], int(sys.argv[2])
with stack(tree, port - 10, port) as url:
    asyncio.run(main(url))
