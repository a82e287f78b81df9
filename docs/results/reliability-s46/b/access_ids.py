# ruff: noqa
"""JSON access lines: valid JSON, ids equal to the answer's X-Session-ID / X-Saga-Replica, not forgeable by
the replica, none on refused/GET/HEAD routes; pipelined requests keep their own ids. Both servers."""

import asyncio, json, os, socket, subprocess, sys, time
from common import *
import aiohttp

USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def chat_answer(forge):
    extra = b"x-session-id: forged-by-replica\r\nX-Saga-Replica: evil-replica\r\n" if forge else b""
    return extra


async def handler(m, path, hd, body):
    b = json.loads(body or b"{}")
    forge = "forge" in json.dumps(b)
    extra = b"x-session-id: forged-by-replica\r\nx-saga-replica: evil-replica\r\n" if forge else b""
    if "error400" in json.dumps(b):
        yield ("w", json_answer({"error": {"message": "bad"}}, 400, extra))
        return
    if b.get("stream"):
        yield ("w", STREAM_HEAD.replace(b"\r\n\r\n", b"\r\n" + extra + b"\r\n", 1) if extra else STREAM_HEAD)
        yield ("w", chunk(b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'))
        yield ("w", chunk(b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}\n\n'))
        yield ("w", chunk(b"data: [DONE]\n\n"))
        yield ("w", b"0\r\n\r\n")
        return
    yield (
        "w",
        json_answer(
            {
                "id": "c",
                "object": "chat.completion",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
                ],
                "usage": USAGE,
            },
            200,
            extra,
        ),
    )


def body(tag, stream=False):
    return {"model": "m", "messages": [{"role": "user", "content": tag}], "stream": stream}


async def scenario(server, port):
    rep = FakeReplica(port + 1, handler)
    rurl = await rep.start()
    env = dict(os.environ, SAGA_LOG_FORMAT="json", PYTHONPATH=TREE)
    proc = subprocess.Popen(
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
        cwd=TREE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    expected = []  # (label, session_id or None, replica or None)
    try:
        for _ in range(100):
            await asyncio.sleep(0.1)
            try:
                async with aiohttp.ClientSession() as h, h.get(url + "/health") as r:
                    if r.status == 200:
                        break
            except Exception:
                pass
        async with aiohttp.ClientSession() as h:

            async def post(label, b, sid=None, path="/v1/chat/completions", raw=None):
                hd = {"X-Session-ID": sid} if sid else {}
                kw = (
                    {"data": raw, "headers": {**hd, "Content-Type": "application/json"}}
                    if raw is not None
                    else {"json": b, "headers": hd}
                )
                async with h.post(url + path, **kw) as r:
                    await r.read()
                    expected.append(
                        (label, r.headers.getall("X-Session-ID", []), r.headers.getall("X-Saga-Replica", []))
                    )

            await post("plain", body("a"), "sess-plain")
            await post("stream", body("b", True), "sess-stream")
            await post("hostile", body("c"), 'ev"il\\sess\t{}é')
            await post("forged_whole", body("forge d"), "sess-forge-whole")
            await post("forged_stream", body("forge e", True), "sess-forge-stream")
            await post("forged_400", body("forge error400"), "sess-forge-400")
            await post("refused_badjson", None, "sess-refused", raw=b"{not json")
            async with h.get(url + "/v1/models") as r:
                await r.read()
                expected.append(
                    (
                        "get_models",
                        r.headers.getall("X-Session-ID", []),
                        r.headers.getall("X-Saga-Replica", []),
                    )
                )
            async with h.head(url + "/health") as r:
                expected.append(
                    (
                        "head_health",
                        r.headers.getall("X-Session-ID", []),
                        r.headers.getall("X-Saga-Replica", []),
                    )
                )
        # pipelined: two requests in one write
        reqs = b""
        for sid in ("pipe-1", "pipe-2"):
            bb = json.dumps(body(sid)).encode()
            reqs += (
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Session-ID: %s\r\nContent-Length: %d\r\n\r\n%s"
                % (sid.encode(), len(bb), bb)
            )
        rd, wr = await asyncio.open_connection("127.0.0.1", port)
        wr.write(reqs)
        await wr.drain()
        data = b""
        try:
            while data.count(b"HTTP/1.1 ") < 2 or not data.endswith(b"}"):
                d = await asyncio.wait_for(rd.read(65536), 3)
                if not d:
                    break
                data += d
        except asyncio.TimeoutError:
            pass
        wr.close()
        for sid in ("pipe-1", "pipe-2"):
            expected.append((f"pipelined {sid}", [sid], ["?"]))
        await asyncio.sleep(0.6)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
        await rep.stop()
    lines = out.decode("utf-8", "replace").splitlines()
    bad_json = [l for l in lines if l.strip() and not _is_json(l)]
    access = [json.loads(l) for l in lines if _is_json(l) and json.loads(l).get("logger") == "saga.access"]
    access = [a for a in access if "/health" not in a["message"] or "HEAD" in a["message"]]
    res = []
    if bad_json:
        res.append(f"DEFECT: [{server}] {len(bad_json)} non-JSON lines, e.g. {bad_json[0][:120]!r}")
    if len(access) != len(expected):
        res.append(
            f"DEFECT: [{server}] {len(access)} access lines for {len(expected)} requests: {[a['message'] for a in access]}"
        )
    for (label, sids, reps), a in zip(expected, access):
        want_s = sids[0] if len(sids) == 1 else (sids if sids else None)
        want_r = reps[0] if len(reps) == 1 else (reps if reps else None)
        got_s, got_r = a.get("session_id"), a.get("replica_id")
        problems = []
        if len(sids) > 1:
            problems.append(f"client got {len(sids)} X-Session-ID headers {sids}")
        if got_s != (sids[0] if sids else None):
            problems.append(f"session_id {got_s!r} vs answer {sids}")
        if want_r != "?" and got_r != (reps[0] if reps else None):
            problems.append(f"replica_id {got_r!r} vs answer {reps}")
        if "forged" in json.dumps(a) or "evil-replica" in json.dumps(a):
            problems.append("replica-forged id logged")
        if label.startswith("pipelined") and got_s != sids[0]:
            pass
        res.append(
            (f"DEFECT: [{server}] {label}: " + "; ".join(problems) + f" line={json.dumps(a)[:200]}")
            if problems
            else f"OK: [{server}] {label}: session_id={got_s!r} replica_id={got_r!r}"
        )
    return res


def _is_json(l):
    try:
        json.loads(l)
        return True
    except Exception:
        return False


async def main():
    for server, port in (("fast", 28140), ("aiohttp", 28150)):
        for line in await scenario(server, port):
            print(line, flush=True)


asyncio.run(main())
