# ruff: noqa
"""Text-format access lines unchanged: same shape as the pre-change tree (/tmp/snap46) for the same calls."""

import asyncio, json, os, re, subprocess, sys

sys.argv += []
from common import *
import aiohttp

REF = os.environ.get("SAGA_REF_TREE", "/tmp/snap46")
U = {"prompt_tokens": 10, "completion_tokens": 3}


async def handler(m, path, hd, body):
    if json.loads(body).get("stream"):
        yield ("w", STREAM_HEAD)
        yield ("w", chunk(b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n'))
        yield ("w", b"0\r\n\r\n")
        return
    yield (
        "w",
        json_answer(
            {
                "id": "x",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
                ],
                "usage": U,
            }
        ),
    )


async def lines_of(tree, server, port, rurl):
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy.cli",
            "serve",
            "--replica",
            rurl,
            "--port",
            str(port),
            "--server",
            server,
            "--health-interval-s",
            "30",
        ],
        cwd=tree,
        env=dict(os.environ, PYTHONPATH=tree, SAGA_LOG_FORMAT="text"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as h:
            for _ in range(100):
                await asyncio.sleep(0.1)
                try:
                    async with h.get(url + "/health") as r:
                        if r.status == 200:
                            break
                except Exception:
                    pass
            for stream in (False, True):
                async with h.post(
                    url + "/v1/chat/completions",
                    json={"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": stream},
                    headers={"X-Session-ID": "sess1"},
                ) as r:
                    await r.read()
            async with h.post(url + "/v1/chat/completions", data=b"{bad") as r:
                await r.read()
            async with h.get(url + "/v1/models") as r:
                await r.read()
        await asyncio.sleep(0.6)
    finally:
        p.terminate()
        out, _ = p.communicate(timeout=10)
    acc = [l for l in out.decode().splitlines() if " saga.access " in l and "/health" not in l]
    return [re.sub(r"\d+\.\d+$", "T", re.sub(r"^\S+ \S+ ", "", l)) for l in acc]


async def main():
    rep = FakeReplica(28191, handler)
    rurl = await rep.start()
    for server in ("fast", "aiohttp"):
        new = await lines_of(TREE, server, 28190, rurl)
        old = await lines_of(REF, server, 28190, rurl)
        print(
            ("OK" if new == old and new else "DEFECT")
            + f": [{server}] text access lines {'same as' if new == old else 'differ from'} the old tree: {new[:2]}"
            + ("" if new == old else f" vs {old[:2]}")
        )
    await rep.stop()


asyncio.run(main())
