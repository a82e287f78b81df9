# ruff: noqa
"""A fake replica: /health 200, /metrics 404, /v1/models; a call gets a JSON head and half a body, then silence (mode stall) or a cut (mode cut)."""

import asyncio, sys, json

port, mode = int(sys.argv[1]), sys.argv[2]
BODY = json.dumps(
    {
        "id": "x",
        "object": "chat.completion",
        "model": "saga-sim",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
).encode()
MODELS = json.dumps(
    {"object": "list", "data": [{"id": "saga-sim", "object": "model", "max_model_len": 4096}]}
).encode()
calls = 0


async def handle(r, w):
    global calls
    try:
        while True:
            head = await r.readuntil(b"\r\n\r\n")
            cl = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    cl = int(line.split(b":")[1])
            body = await r.readexactly(cl) if cl else b""
            path = head.split(b" ")[1]
            if head.startswith(b"GET") and path.startswith(b"/health"):
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            elif head.startswith(b"GET") and path.startswith(b"/v1/models"):
                w.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                    % len(MODELS)
                    + MODELS
                )
            elif head.startswith(b"GET"):
                w.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            else:
                calls += 1
                import os

                if os.environ.get("DUMP"):
                    open(os.environ["DUMP"], "ab").write(body + b"\n---\n")
                if mode == "flood":
                    w.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                    )
                    ev = (
                        b'data: {"id":"x","object":"chat.completion.chunk","model":"saga-sim","choices":[{"index":0,"delta":{"content":"'
                        + b"a" * 2000
                        + b'"},"finish_reason":null}]}\n\n'
                    )
                    piece = b"%x\r\n" % len(ev) + ev + b"\r\n"
                    while True:
                        w.write(piece * 8)
                        await w.drain()
                print("CALL", calls, flush=True)
                w.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                    % len(BODY)
                    + BODY[: len(BODY) // 2]
                )
                await w.drain()
                if mode == "flood":
                    w.transport.write(b"")
                    w.write(b"")
                if mode == "poison" and b"POISON" not in body:
                    w.write(BODY[len(BODY) // 2 :])
                    await w.drain()
                    continue
                if mode == "stall":
                    await asyncio.sleep(3600)
                await asyncio.sleep(0.1)
                w.transport.abort()
                return
            await w.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        w.close()


async def main():
    s = await asyncio.start_server(handle, "127.0.0.1", port)
    async with s:
        await s.serve_forever()


asyncio.run(main())
