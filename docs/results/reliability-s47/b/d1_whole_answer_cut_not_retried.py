# ruff: noqa
#!/usr/bin/env python3
"""DEFECT check: a whole (non-streamed) answer that the session's replica cuts mid-body is answered 502 by the
proxy without trying the other, healthy replica (no byte had reached the client: the proxy holds whole
answers), and the session stays bound there, so the openai SDK's own retries (max_retries=2: it retries 502)
go to the same replica and the SDK user gets InternalServerError 502 while a healthy replica is idle.
Runs with server: fast and server: aiohttp. Project tree: $SAGA_TREE (default /tmp/snap47)."""

import contextlib, json, os, signal, socket, subprocess, sys, tempfile, time, urllib.request

TREE = os.environ.get("SAGA_TREE", "/tmp/snap47")
import openai


def wait_port(port, t=30):
    end = time.time() + t
    while time.time() < end:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} never opened")


def wait_health(url, t=30):
    end = time.time() + t
    while time.time() < end:
        with contextlib.suppress(Exception):
            if urllib.request.urlopen(url + "/health", timeout=2).status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(url + " never healthy")


def run(server, sim_port, proxy_port):
    procs = []
    log = open(tempfile.mktemp(prefix="d1-", suffix=".log"), "w")
    try:
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "proxy",
                    "sim",
                    "--replicas",
                    "2",
                    "--base-port",
                    str(sim_port),
                    "--time-scale",
                    "20",
                ],
                cwd=TREE,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        )
        reps = [f"http://127.0.0.1:{sim_port + i}" for i in range(2)]
        for i in range(2):
            wait_port(sim_port + i)
        cmd = [
            sys.executable,
            "-m",
            "proxy",
            "serve",
            "--port",
            str(proxy_port),
            "--time-scale",
            "20",
            "--no-access-log",
            "--server",
            server,
        ]
        for r in reps:
            cmd += ["--replica", r]
        procs.append(subprocess.Popen(cmd, cwd=TREE, stdout=log, stderr=log, start_new_session=True))
        url = f"http://127.0.0.1:{proxy_port}"
        wait_port(proxy_port)
        wait_health(url)
        msg = [{"role": "user", "content": "hi"}]
        first = openai.OpenAI(
            base_url=url + "/v1", api_key="x", max_retries=0
        ).chat.completions.with_raw_response.create(
            model="saga-sim", messages=msg, max_tokens=4, extra_headers={"x-session-id": "agent-1"}
        )
        bad = first.headers["x-saga-replica"]
        req = urllib.request.Request(
            bad + "/saga/v1/faults",
            data=json.dumps({"kind": "die_mid_stream", "duration_s": 60}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(req, timeout=5).read()
        good = [r for r in reps if r != bad][0]

        def served(rep):
            import re

            txt = urllib.request.urlopen(rep + "/metrics", timeout=5).read().decode()
            return sum(
                float(m.group(1))
                for m in re.finditer(r"^vllm:e2e_request_latency_seconds_count(?:{[^}]*})? (\S+)$", txt, re.M)
            )

        before = served(good)
        sdk = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=2)  # the SDK's default retries
        try:
            r = sdk.chat.completions.with_raw_response.create(
                model="saga-sim",
                messages=msg + [{"role": "assistant", "content": "x"}, {"role": "user", "content": "next"}],
                max_tokens=4,
                extra_headers={"x-session-id": "agent-1"},
            )
            print(
                f"OK: [{server}] served by {r.headers['x-saga-replica']} (the cutting replica is {bad}), SDK retries taken: {r.retries_taken}"
            )
        except openai.APIStatusError as e:
            print(
                f"DEFECT: [{server}] SDK call failed after its 2 retries with {type(e).__name__} {e.status_code} "
                f"{e.message!r}; the healthy replica {good} served {served(good) - before:.0f} of its attempts"
            )
    finally:
        for p in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                p.wait(5)
        log.close()
        os.unlink(log.name)


run("fast", 22100, 22000)
run("aiohttp", 22110, 22010)
