# ruff: noqa
"""Shared harness: an in-process fake vLLM replica (raw asyncio, exact bytes) and a SAGA proxy subprocess."""

import os
from pathlib import Path

import asyncio, json, os, signal, subprocess, sys, time, urllib.request

SNAP = os.environ.get("SAGA_TREE", str(Path(__file__).resolve().parents[4]))
LOG_DIR = os.environ.get("SAGA_REVIEW_LOGS", "/tmp/saga-review45-logs")
os.makedirs(LOG_DIR, exist_ok=True)


class Fake:
    """handler(method, path, headers(dict lower), body) -> list of actions:
    ("head", status, [(k, v)...], chunked: bool) ; ("data", bytes) ; ("sleep", s) ; ("cut",) ; ("end",)
    """

    def __init__(self, port, handler):
        self.port = port
        self.handler = handler
        self.requests = []  # (method, path, headers, body)
        self.closed_conns = []  # (time, path of last request, finished?)
        self.server = None

    async def start(self):
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", self.port)

    async def stop(self):
        self.server.close()

    async def _conn(self, reader, writer):
        last = [None, True]
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for l in lines[1:]:
                    if ":" in l:
                        k, v = l.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = b""
                if "content-length" in headers:
                    body = await reader.readexactly(int(headers["content-length"]))
                elif headers.get("transfer-encoding", "").lower() == "chunked":
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                        chunk = await reader.readexactly(size + 2)
                        if size == 0:
                            break
                        body += chunk[:-2]
                if not path.startswith(("/health", "/metrics", "/v1/models", "/load", "/kv_event")):
                    self.requests.append((method, path, headers, body))
                last[0] = path
                last[1] = False
                actions = self.handler(method, path, headers, body)
                chunked = False
                cut = False
                for a in actions:
                    if a[0] == "head":
                        status, hdrs, chunked = a[1], a[2], a[3]
                        out = f"HTTP/1.1 {status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs)
                        out += "transfer-encoding: chunked\r\n" if chunked else ""
                        writer.write(out.encode() + b"\r\n")
                    elif a[0] == "data":
                        if chunked:
                            writer.write(b"%x\r\n" % len(a[1]) + a[1] + b"\r\n")
                        else:
                            writer.write(a[1])
                        await writer.drain()
                    elif a[0] == "sleep":
                        await asyncio.sleep(a[1])
                        if writer.is_closing() or reader.at_eof():
                            raise ConnectionResetError("peer gone")
                    elif a[0] == "cut":
                        await writer.drain()
                        writer.transport.abort()
                        cut = True
                        break
                if cut:
                    self.closed_conns.append((time.time(), last[0], "cut"))
                    return
                if chunked:
                    writer.write(b"0\r\n\r\n")
                await writer.drain()
                last[1] = True
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception as e:  # pragma: no cover
            print("fake error", repr(e), file=sys.stderr)
        self.closed_conns.append((time.time(), last[0], "finished" if last[1] else "aborted"))
        try:
            writer.close()
        except Exception:
            pass


def basic_routes(method, path, headers, body):
    if path.startswith("/health"):
        return [("head", 200, [("content-length", "0")], False)]
    if path.startswith("/v1/models"):
        b = json.dumps(
            {
                "object": "list",
                "data": [{"id": "fake", "object": "model", "owned_by": "vllm", "max_model_len": 8192}],
            }
        ).encode()
        return [
            ("head", 200, [("content-type", "application/json"), ("content-length", str(len(b)))], False),
            ("data", b),
        ]
    if path.startswith("/metrics"):
        b = b"# HELP x\n"
        b = (
            b"# HELP vllm:cache_config_info x\n# TYPE vllm:cache_config_info gauge\n"
            b'vllm:cache_config_info{block_size="16",num_gpu_blocks="10000"} 1.0\n'
            b'vllm:num_requests_running{model_name="fake"} 0.0\nvllm:num_requests_waiting{model_name="fake"} 0.0\n'
            b'vllm:kv_cache_usage_perc{model_name="fake"} 0.0\n'
        )
        return [
            ("head", 200, [("content-type", "text/plain"), ("content-length", str(len(b)))], False),
            ("data", b),
        ]
    return None


def whole(status, body, ctype="application/json"):
    return [
        ("head", status, [("content-type", ctype), ("content-length", str(len(body)))], False),
        ("data", body),
    ]


def stream(events, delay=0.0, cut_after=None):
    acts = [
        (
            "head",
            200,
            [("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache")],
            True,
        )
    ]
    for i, e in enumerate(events):
        if cut_after is not None and i == cut_after:
            acts.append(("cut",))
            return acts
        if delay:
            acts.append(("sleep", delay))
        acts.append(("data", e))
    return acts


class Proxy:
    def __init__(self, port, replicas, extra=()):
        self.port = port
        log = open(f"{LOG_DIR}/proxy_{port}.log", "w")
        args = [sys.executable, "-m", "proxy.cli", "serve", "--port", str(port), "--health-interval-s", "0.3"]
        for r in replicas:
            args += ["--replica", r]
        args += list(extra)
        self.p = subprocess.Popen(args, cwd=SNAP, stdout=log, stderr=subprocess.STDOUT)

    async def wait_ready(self, timeout=30):
        t0 = time.time()
        while time.time() - t0 < timeout:
            try:
                st = await aget(self.port, "/saga/v1/replicas")
                if st and all(r["healthy"] for r in json.loads(st)["replicas"]):
                    await asyncio.sleep(0.5)
                    return
            except Exception:
                pass
            await asyncio.sleep(0.3)
        raise RuntimeError("proxy not ready")

    def stop(self):
        self.p.send_signal(signal.SIGKILL)
        self.p.wait()


async def raw(port, req: bytes, timeout=10.0, read_all=True):
    """Sends raw bytes, returns (status, headers, body_bytes) reading until close or content-length/chunked end."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(req)
    await w.drain()
    try:
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for l in lines[1:]:
            if ":" in l:
                k, v = l.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        body = b""
        if "content-length" in headers:
            body = await asyncio.wait_for(r.readexactly(int(headers["content-length"])), timeout)
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await asyncio.wait_for(read_chunked(r), timeout)
        else:
            body = await asyncio.wait_for(r.read(), timeout)
        return status, headers, body
    finally:
        w.close()


async def read_chunked(r, on_chunk=None):
    body = b""
    while True:
        line = await r.readuntil(b"\r\n")
        size = int(line.strip().split(b";")[0], 16)
        data = await r.readexactly(size + 2)
        if size == 0:
            return body
        body += data[:-2]
        if on_chunk:
            on_chunk(data[:-2])


def post(path, body, headers=(), host="x"):
    if isinstance(body, str):
        body = body.encode()
    h = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    h += "".join(f"{k}: {v}\r\n" for k, v in headers)
    return h.encode("latin-1") + b"\r\n" + body


async def aget(port, path):
    s, h, b = await raw(
        port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(), timeout=5
    )
    return b.decode()


async def in_flight(port):
    st = json.loads(await aget(port, "/saga/v1/state"))
    return st["in_flight"], [r["in_flight"] for r in st["replicas"]], st.get("queued")


async def metrics(port):
    return await aget(port, "/metrics")


def run(main):
    try:
        print(asyncio.run(main()))
    except Exception as e:
        import traceback

        traceback.print_exc()
        print(f"OK?: harness error {e!r}")
