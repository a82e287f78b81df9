import asyncio
import json
import os as _os
import sys
import urllib.request

import aiohttp

HERE = _os.path.dirname(_os.path.abspath(__file__))
sys.path.insert(0, HERE)
import lib  # noqa: E402 (after its folder is on the path)

SIM, PORT = 19661, 19660
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{SIM}"]
ADM = {"Authorization": "Bearer adm"}


def aget(path):
    req = urllib.request.Request(B + path, headers=ADM)
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


async def call(s, key, messages):
    async with s.post(
        f"{B}/v1/chat/completions",
        json={"model": "saga-sim", "messages": messages, "max_tokens": 8},
        headers={"Authorization": f"Bearer {key}"},
    ) as r:
        j = await r.json()
        return r.status, j["choices"][0]["message"]["content"]


async def main():
    async with aiohttp.ClientSession() as s:
        for k in range(3):
            base = [
                {"role": "system", "content": f"You are agent {k}."},
                {"role": "user", "content": "task one"},
            ]
            outs = {}
            for key in ["sk-alpha", "sk-beta"]:
                _st, ans = await call(s, key, base)
                outs[key] = ans
            for key in ["sk-alpha", "sk-beta"]:
                msgs = [
                    *base,
                    {"role": "assistant", "content": outs[key]},
                    {"role": "user", "content": "next"},
                ]
                _st, ans = await call(s, key, msgs)
        ss = aget("/saga/v1/sessions")["sessions"]
        print(len(ss), [(x["session_id"][:30], x["calls"], x["worker"]) for x in ss])
        print(outs)


sims = lib.start_sims(SIM, 1, 20000)
proxy = lib.start_proxy(PORT, R, config=HERE + "/keys.yaml", extra=["--workers", "2"])
try:
    asyncio.run(main())
finally:
    lib.stop(proxy)
    lib.stop(sims)
