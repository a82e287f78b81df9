# ruff: noqa
"""A replica killed (SIGKILL) while streaming an n=8 answer (chat and completions): what the client gets (an
error event / [DONE]?), the proxy's in_flight afterwards, and whether the next call (the same session's,
n=8) is served by the other replica. Two simulator processes, one replica each."""

import os, sys, json, time, socket, subprocess, signal, contextlib, threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *

TREE = {"AFTER": AFTER, "MID": MID, "BEFORE": BEFORE}[os.environ.get("TREE", "AFTER")]
W = int(os.environ.get("WORKERS", "1"))
res = []
for k, path in enumerate(("/v1/chat/completions", "/v1/completions")):
    base = 26850 + 10 * k + (5 if os.environ.get("TREE", "AFTER") != "AFTER" else 0)
    sims = [
        subprocess.Popen(
            [
                "python3",
                "-m",
                "proxy",
                "sim",
                "--replicas",
                "1",
                "--base-port",
                str(base + 1 + i),
                "--time-scale",
                "1",
                "--profile",
                "tiny-cpu",
            ],
            cwd=AFTER,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    for i in range(2):
        wait_http(f"http://127.0.0.1:{base + 1 + i}/health")
    p = subprocess.Popen(
        [
            "python3",
            "-m",
            "proxy",
            "serve",
            "--port",
            str(base),
            "--replica",
            f"http://127.0.0.1:{base + 1}",
            "--replica",
            f"http://127.0.0.1:{base + 2}",
            "--no-access-log",
            "--health-interval-s",
            "0.2",
            "--workers",
            str(W),
        ],
        cwd=TREE,
        start_new_session=True,
        stdout=open(f"{LOG}/proxy-dies-{base}.log", "w"),
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{base}"
        wait_http(url + "/health")
        body = {
            "model": "saga-sim",
            "max_tokens": 1500,
            "ignore_eos": True,
            "stream": True,
            "n": 8,
            "temperature": 1.0,
        }
        if "chat" in path:
            body["messages"] = [{"role": "user", "content": "long story please"}]
        else:
            body["prompt"] = "long story please"
        s = socket.create_connection(("127.0.0.1", base))
        data = json.dumps(body).encode()
        s.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Session-ID: sess{k}\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        got = b""
        while len(got) < 3000:
            got += s.recv(65536)
        head = got.split(b"\r\n\r\n")[0].decode()
        rep = [
            l.split(":", 1)[1].strip() for l in head.split("\r\n") if l.lower().startswith("x-saga-replica")
        ]
        victim = sims[0] if rep and rep[0].endswith(str(base + 1)) else sims[1]
        os.killpg(victim.pid, signal.SIGKILL)
        s.settimeout(15)
        t = time.time()
        try:
            while True:
                c = s.recv(65536)
                if not c:
                    break
                got += c
                if b"[DONE]" in got or b'"error"' in got[-2000:]:
                    break
        except socket.timeout:
            pass
        s.close()
        tail = got[-600:].decode(errors="replace")
        error_event = b'"error"' in got
        done = b"[DONE]" in got
        time.sleep(1.0)
        reps = get(url + "/saga/v1/replicas")
        inflight = sum(x["in_flight"] for x in (reps if isinstance(reps, list) else reps.get("replicas", [])))
        st, txt, sid = post(
            url,
            dict(body, stream=False, max_tokens=20),
            headers={"X-Session-ID": f"sess{k}"},
            path=path,
            timeout=60,
        )
        nchoices = len(json.loads(txt)["choices"]) if st == 200 else None
        res.append((path, error_event, done, round(time.time() - t, 1), inflight, st, nchoices))
        print(
            path,
            "error event",
            error_event,
            "[DONE]",
            done,
            "end after",
            round(time.time() - t, 1),
            "s; in_flight",
            inflight,
            "next call",
            st,
            nchoices,
            flush=True,
        )
    finally:
        for x in [p] + sims:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(x.pid, signal.SIGTERM)
            with contextlib.suppress(Exception):
                x.wait(10)
bad = [r for r in res if not r[1] or r[4] != 0 or r[5] != 200 or r[6] != 8]
print("DEFECT" if bad else "OK", os.path.basename(TREE), f"w={W} replica killed mid n=8 stream:", res)
