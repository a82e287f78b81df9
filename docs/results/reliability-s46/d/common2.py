# ruff: noqa
"""Shared helpers: a scriptable fake replica and an in-process proxy from $SAGA_TREE."""

import asyncio, json, os, sys

TREE = os.environ.get("SAGA_TREE", "/tmp/snap46d")
sys.path.insert(0, TREE)
os.chdir(TREE)


class FakeReplica:
    """handler(method, path, headers(dict lower), body bytes) -> async generator of ('w', bytes) | ('sleep', s) | ('abort',) | ('close',)"""

    def __init__(self, port, handler):
        self.port, self.handler, self.server = port, handler, None
        self.calls = []

    async def start(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return f"http://127.0.0.1:{self.port}"

    async def stop(self):
        self.server.close()

    async def _serve(self, reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                hdrs = {}
                for l in lines[1:]:
                    if ":" in l:
                        k, v = l.split(":", 1)
                        hdrs[k.strip().lower()] = v.strip()
                n = int(hdrs.get("content-length", "0"))
                body = await reader.readexactly(n) if n else b""
                if method != "POST" and not getattr(self, "all_methods", False):
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}"
                    )
                    await writer.drain()
                    continue
                self.calls.append((path, hdrs, body))
                async for step in self.handler(method, path, hdrs, body):
                    if step[0] == "w":
                        writer.write(step[1])
                        await writer.drain()
                    elif step[0] == "sleep":
                        await asyncio.sleep(step[1])
                    elif step[0] == "abort":
                        writer.transport.abort()
                        return
                    elif step[0] == "close":
                        writer.close()
                        return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass


def chunk(b):
    return b"%x\r\n%s\r\n" % (len(b), b)


STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def json_answer(obj, status=200, extra=b""):
    b = json.dumps(obj).encode()
    return b"HTTP/1.1 %d OK\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s" % (
        status,
        extra,
        len(b),
        b,
    )


def sse_events(text):
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = None, None
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                try:
                    data = json.loads(line[5:])
                except Exception:
                    data = line[5:]
        if data is not None:
            out.append((name, data))
    return out
