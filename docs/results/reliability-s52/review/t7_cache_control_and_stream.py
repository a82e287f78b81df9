# ruff: noqa
"""ONE prompt_cache_key per conversation.
(a) The client marks its LAST user message with cache_control (Anthropic-style breakpoints, as LiteLLM/
    OpenRouter-style clients send in OpenAI content parts): turn 1's first user message carries the marker,
    later turns' do not. At turn 3 two parallel calls. Expected: one session throughout.
(b) Streamed call interrupted by the client after 3 chunks, then the same call resent at once; then a
    non-streamed timeout (client gives up after 0.3 s) and a retry. Expected: one session throughout."""

import asyncio, sys, aiohttp

sys.path.insert(0, "/tmp/reviewK")
from harness import stack, get


def umsg(text, mark):
    part = {"type": "text", "text": text}
    if mark:
        part["cache_control"] = {"type": "ephemeral"}
    return {"role": "user", "content": [part]}


async def call(http, url, msgs, key, mt=40, stream=False, cut=None, timeout=None):
    body = {
        "model": "saga-sim",
        "max_tokens": mt,
        "messages": msgs,
        "prompt_cache_key": key,
        "stream": stream,
    }
    try:
        async with http.post(
            url + "/v1/chat/completions", json=body, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as r:
            sid, rep = r.headers.get("X-Session-ID"), r.headers.get("X-Saga-Replica", "")[-5:]
            if cut:
                n = 0
                async for _ in r.content:
                    n += 1
                    if n >= cut:
                        break
                return "cut", sid, rep, None
            j = await r.json() if not stream else None
            return r.status, sid, rep, j
    except asyncio.TimeoutError:
        return "timeout", None, None, None


async def main(url):
    async with aiohttp.ClientSession() as http:
        texts = ["Implement feature X " + "spec " * 80]
        hist = []
        for turn in range(1, 7):
            msgs = [{"role": "system", "content": "agent"}]
            ui = 0
            for m in hist:
                msgs.append(m)
            msgs.append(umsg(texts[-1], True))
            msgs = [
                m if m.get("role") != "user" or m is msgs[-1] else umsg(m["content"][0]["text"], False)
                for m in msgs
            ]
            res = await asyncio.gather(
                *[call(http, url, msgs, "conv-cc") for _ in range(2 if turn == 3 else 1)]
            )
            for r in res:
                print(f"(a) turn {turn} status {r[0]} session {r[1]} replica {r[2]}")
            hist = msgs[1:] + [res[0][3]["choices"][0]["message"]]
            texts.append(f"tool output {turn} " + "z " * 30)
        msgs = [
            {"role": "system", "content": "agent"},
            {"role": "user", "content": "stream task " + "q " * 80},
        ]
        for label, kw in [
            ("first", {}),
            ("stream cut", {"stream": True, "cut": 3, "mt": 300}),
            ("resend", {}),
            ("timeout", {"mt": 400, "timeout": 0.3}),
            ("retry", {}),
            ("next", {}),
        ]:
            r = await call(http, url, msgs, "conv-st", **kw)
            print(f"(b) {label:10s} status {r[0]} session {r[1]} replica {r[2]}")
    print("cache_keys", get(url + "/saga/v1/state").get("cache_keys"))


tree, port = sys.argv[1], int(sys.argv[2])
with stack(tree, port - 10, port, sim_args=("--profile", "llama3-8b-h100", "--model", "saga-sim")) as url:
    asyncio.run(main(url))
