# ruff: noqa
"""--workers 2, JSON logs, one pooled keep-alive connection across sessions (calls relayed between workers):
each call's access line(s) carry the session and replica its answer named."""

import asyncio, json, os, signal, subprocess, sys
from collections import defaultdict
from common import *
import aiohttp

U = {"prompt_tokens": 10, "completion_tokens": 3}


async def handler(m, path, hd, body):
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


async def main():
    port = 28195
    rep = FakeReplica(28196, handler)
    rurl = await rep.start()
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
            "--workers",
            "2",
            "--health-interval-s",
            "30",
        ],
        cwd=TREE,
        env=dict(os.environ, PYTHONPATH=TREE, SAGA_LOG_FORMAT="json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    answers = {}
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as h:
            for _ in range(150):
                await asyncio.sleep(0.1)
                try:
                    async with h.get(url + "/health") as r:
                        if r.status == 200:
                            break
                except Exception:
                    pass
            await asyncio.sleep(1)
            for i in range(30):
                b = {"model": "m", "messages": [{"role": "user", "content": f"c{i}"}]}
                async with h.post(
                    url + "/v1/chat/completions", json=b, headers={"X-Session-ID": f"relay-{i}"}
                ) as r:
                    await r.read()
                    answers[f"relay-{i}"] = (
                        r.status,
                        r.headers.get("X-Session-ID"),
                        r.headers.get("X-Saga-Replica"),
                    )
        await asyncio.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=15)
        except Exception:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        await rep.stop()
    bad_json, by_sid, no_id = 0, defaultdict(list), []
    for l in out.decode("utf-8", "replace").splitlines():
        try:
            j = json.loads(l)
        except Exception:
            bad_json += 1
            continue
        if j.get("logger") == "saga.access" and "chat/completions" in j.get("message", ""):
            if j.get("session_id"):
                by_sid[j["session_id"]].append(j)
            else:
                no_id.append(j["message"])
    wrong = [
        (s, [x.get("replica_id") for x in by_sid[s]], a)
        for s, a in answers.items()
        if not by_sid[s] or any(x.get("replica_id") != a[2] for x in by_sid[s])
    ]
    multi = {s: len(v) for s, v in by_sid.items() if len(v) > 1}
    print(
        ("DEFECT" if bad_json or wrong or no_id else "OK")
        + f": relayed calls: non-JSON lines {bad_json}, wrong/missing ids {wrong[:2]}, lines without ids {no_id[:2]}"
    )
    print(
        f"INFO: sessions with more than one access line (relayed: relaying + owning worker): {len(multi)} of {len(answers)}"
    )


asyncio.run(main())
