"""A replica whose stream is one line of many megabytes, and a client that times the proxy's `/health`
while that stream is relayed (the twenty-eighth session's measure of the stream scanner's held line).

    python3 docs/results/overhead-s28/long_line.py backend 18200 128 &   # one 128 MB line per call
    saga serve --replica http://127.0.0.1:18200 --port 18201 &
    python3 docs/results/overhead-s28/long_line.py probe 18201           # twice: the first warms up

The probe prints the megabytes relayed, how long the stream took, and the slowest of 200 `/health` calls
made 50 ms apart meanwhile (a quick proxy answers each in a few ms; a held loop shows as the slowest).
"""

from __future__ import annotations

import asyncio
import sys
import time

import aiohttp
from aiohttp import web


def backend(port: int, megabytes: int) -> None:
    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        answer = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await answer.prepare(request)
        await answer.write(b'data: {"choices":[{"delta":{"content":"')
        piece = b"x" * 16384
        for _ in range(megabytes * 64):
            await answer.write(piece)
        await answer.write(b'"}}]}\n\ndata: [DONE]\n\n')
        return answer

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


async def probe(port: int) -> None:
    base = f"http://127.0.0.1:{port}"
    call = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with aiohttp.ClientSession() as http:

        async def stream() -> tuple[int, float]:
            start, size = time.perf_counter(), 0
            async with http.post(f"{base}/v1/chat/completions", json=call) as answer:
                async for chunk in answer.content.iter_any():
                    size += len(chunk)
            return size, time.perf_counter() - start

        async def health() -> float:
            slowest = 0.0
            for _ in range(200):
                start = time.perf_counter()
                async with http.get(f"{base}/health") as answer:
                    await answer.read()
                slowest = max(slowest, time.perf_counter() - start)
                await asyncio.sleep(0.05)
            return slowest

        (size, took), slowest = await asyncio.gather(stream(), health())
    print(f"relayed {size / 1e6:.1f} MB in {took:.1f} s; slowest /health {slowest * 1000:.0f} ms")


if __name__ == "__main__":
    if sys.argv[1] == "backend":
        backend(int(sys.argv[2]), int(sys.argv[3]))
    else:
        asyncio.run(probe(int(sys.argv[2])))
