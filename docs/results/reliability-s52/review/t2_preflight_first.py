# ruff: noqa
"""One conversation with ONE prompt_cache_key of its own, whose FIRST call is a preflight/router call
(different first user message: "Classify this request ..."), as many apps do before the agent loop.
Then the agent loop: 8 turns, full history, at turn 3 two parallel calls (same history).
Expected: the agent loop keeps one session (as before) and one replica."""

import asyncio, sys, aiohttp

sys.path.insert(0, "/tmp/reviewK")
from harness import stack, get


async def call(http, url, msgs, key, mt=40):
    body = {"model": "saga-sim", "max_tokens": mt, "messages": msgs, "prompt_cache_key": key}
    async with http.post(url + "/v1/chat/completions", json=body) as r:
        j = await r.json()
        return r.status, r.headers.get("X-Session-ID"), r.headers.get("X-Saga-Replica", "")[-5:], j


async def main(url):
    async with aiohttp.ClientSession() as http:
        task = "Fix the failing test in repo foo " + "ctx " * 80
        r = await call(
            http, url, [{"role": "user", "content": "Classify this request: " + task}], "thread-42", 5
        )
        print(f"preflight status {r[0]} session {r[1]} replica {r[2]}")
        hist = [{"role": "system", "content": "agent"}, {"role": "user", "content": task}]
        for turn in range(1, 9):
            if turn == 3:
                res = await asyncio.gather(
                    call(http, url, hist, "thread-42"), call(http, url, hist, "thread-42")
                )
            else:
                res = [await call(http, url, hist, "thread-42")]
            for st, sid, rep, j in res:
                print(f"turn {turn} status {st} session {sid} replica {rep}")
            hist = hist + [
                {"role": "assistant", "content": res[0][3]["choices"][0]["message"]["content"]},
                {"role": "user", "content": f"tool result {turn} " + "y " * 40},
            ]
        print("cache_keys", get(url + "/saga/v1/state").get("cache_keys"))


tree, port = sys.argv[1], int(sys.argv[2])
with stack(tree, port - 10, port) as url:
    asyncio.run(main(url))
