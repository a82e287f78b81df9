# ruff: noqa
"""App with ONE prompt_cache_key ("app") for many conversations, Responses API stateful
(previous_response_id). Conversation A starts; while A's call runs, B starts (split to app~...).
Then both continue 4 turns via previous_response_id (concurrently). Expected (after the change):
B stays in its own session for all its turns."""

import asyncio, sys, aiohttp

sys.path.insert(0, "/tmp/reviewK")
from harness import stack, get


async def call(http, url, body):
    body = {"model": "saga-sim", "max_output_tokens": 60, "prompt_cache_key": "app", **body}
    async with http.post(url + "/v1/responses", json=body) as r:
        j = await r.json()
        return r.status, r.headers.get("X-Session-ID"), r.headers.get("X-Saga-Replica", "")[-5:], j


async def conv(http, url, name, delay):
    await asyncio.sleep(delay)
    st, sid, rep, j = await call(
        http, url, {"input": f"conversation {name}: " + "w " * 100, "instructions": "agent"}
    )
    print(f"{name} turn 0 status {st} session {sid} replica {rep}")
    prev = j.get("id")
    for t in range(1, 5):
        st, sid, rep, j = await call(
            http, url, {"input": f"next {t}", "previous_response_id": prev, "instructions": "agent"}
        )
        print(
            f"{name} turn {t} status {st} session {sid} replica {rep}"
            + ("" if st == 200 else f" {str(j)[:120]}")
        )
        prev = j.get("id", prev)


async def main(url):
    async with aiohttp.ClientSession() as http:
        await asyncio.gather(conv(http, url, "A", 0), conv(http, url, "B", 0.05))
    print("cache_keys", get(url + "/saga/v1/state").get("cache_keys"))


tree, port = sys.argv[1], int(sys.argv[2])
with stack(tree, port - 10, port) as url:
    asyncio.run(main(url))
