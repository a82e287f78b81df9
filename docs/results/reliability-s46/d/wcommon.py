# ruff: noqa
# ruff: noqa
"""Harness: a scripted replica holding stored responses + `saga serve --workers 2` from $SAGA_TREE, and a way to
tell which worker process accepted a client connection (ss -tnp)."""

import asyncio, json, os, re, signal, subprocess, sys, time

TREE = os.environ.get("SAGA_TREE", "/tmp/snap46e")
sys.path.insert(0, "/work/main/docs/results/reliability-s46/c")
os.environ["SAGA_TREE"] = TREE
from common2 import FakeReplica, chunk, STREAM_HEAD, json_answer, sse_events  # noqa: E402
import aiohttp  # noqa: E402


def ev(n, typ="response.output_text.delta", extra=None, eol=b"\n"):
    d = {"type": typ, "item_id": "m", "delta": "x", "sequence_number": n}
    if extra:
        d.update(extra)
    return b"event: " + typ.encode() + eol + b"data: " + json.dumps(d).encode() + eol + eol


def pid_of(proxy_port, client_port):
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established"], capture_output=True, text=True, timeout=10
    ).stdout
    for line in out.splitlines():
        if f"127.0.0.1:{proxy_port} " in line and f"127.0.0.1:{client_port} " in line:
            m = re.search(r"pid=(\d+)", line)
            if m and line.split()[2].endswith(f":{proxy_port}"):
                return int(m.group(1))
    return None


class Proxy:
    def __init__(self, port, replica_url, extra=()):
        self.port, self.url = port, f"http://127.0.0.1:{port}"
        self.log = open(f"/tmp/proxy-{port}.log", "w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "proxy.cli",
                "serve",
                "--replica",
                replica_url,
                "--port",
                str(port),
                "--workers",
                "2",
                "--no-access-log",
                "--health-interval-s",
                "30",
                *extra,
            ],
            cwd=TREE,
            env=dict(os.environ, PYTHONPATH=TREE),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def workers(self):
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True
        ).stdout
        return [int(x) for x in out.split()]

    async def ready(self):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as h:
            for _ in range(200):
                await asyncio.sleep(0.1)
                try:
                    async with h.get(self.url + "/health") as r:
                        if r.status == 200 and len(self.workers()) >= 2:
                            await asyncio.sleep(1.0)
                            return True
                except Exception:
                    pass
        return False

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        except Exception:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except Exception:
                pass
        self.log.close()


async def raw_request(port, method, path, body=b"", on_chunk=None, res=None):
    """A minimal HTTP/1.1 client on a connection of its own: res dict with status, headers, chunks [(t, bytes)]
    of the decoded body, pid (the worker process that accepted the connection, read after the head), error."""
    t0 = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    cport = writer.get_extra_info("sockname")[1]
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    writer.write(head.encode() + body)
    res = {} if res is None else res
    res.update(chunks=[], error=None, t0=t0, pid=None)
    try:
        h = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        lines = h.decode("latin1").split("\r\n")
        res["status"] = int(lines[0].split()[1])
        hd = {}
        for l in lines[1:]:
            if ":" in l:
                k, v = l.split(":", 1)
                hd[k.strip().lower()] = v.strip()
        res["headers"] = hd
        res["ctype"] = hd.get("content-type")
        res["pid"] = pid_of(port, cport)
        if hd.get("transfer-encoding") == "chunked":
            while True:
                size_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), 30)
                n = int(size_line.split(b";")[0], 16)
                if n == 0:
                    await reader.readuntil(b"\r\n")
                    break
                data = await reader.readexactly(n + 2)
                res["chunks"].append((time.monotonic() - t0, data[:-2]))
                if on_chunk:
                    await on_chunk(res)
        elif "content-length" in hd:
            data = await reader.readexactly(int(hd["content-length"]))
            res["chunks"].append((time.monotonic() - t0, data))
        else:
            while data := await reader.read(65536):
                res["chunks"].append((time.monotonic() - t0, data))
    except Exception as e:
        res["error"] = repr(e)
    finally:
        writer.close()
    return res


async def post_owner(proxy, rid):
    """POST /v1/responses answered with id `rid` (the replica's handler must do so); the pid that served it."""
    res = await raw_request(
        proxy.port, "POST", "/v1/responses", json.dumps({"model": "m", "input": rid}).encode()
    )
    return res.get("status"), res.get("pid")


async def get_stream(proxy, path, owner_pid, want_relayed=True, tries=12, on_chunk=None):
    """GET path on fresh connections until one lands on a worker other than owner_pid (want_relayed) or on it."""
    for _ in range(tries):
        res = {}
        task = asyncio.ensure_future(raw_request(proxy.port, "GET", path, on_chunk=on_chunk, res=res))
        # decide which worker once the head came: drop a connection that landed on the wrong one
        for _ in range(100):
            await asyncio.sleep(0.02)
            if res.get("pid") is not None or task.done():
                break
        if res.get("pid") is not None and (res["pid"] != owner_pid) != want_relayed:
            task.cancel()
            try:
                await task
            except BaseException:
                pass
            continue
        await task
        return res
    return None


def event_times(chunks):
    """(arrival time, raw event bytes) of each complete event, in order, plus leftover bytes."""
    buf, out = b"", []
    for t, c in chunks:
        buf += c
        while True:
            m = re.search(rb"\r\n\r\n|\n\n", buf)
            if not m:
                break
            out.append((t, buf[: m.end()]))
            buf = buf[m.end() :]
    return out, buf
