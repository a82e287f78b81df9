# ruff: noqa
#!/usr/bin/env python3
"""DEFECT check (related to d1): a stream whose replica sends its 200 head and is cut before its first event is
ended with the proxy's mid-answer error event (the openai SDK raises APIError 'the replica failed mid-answer',
and does not retry streams), though no event had reached the client and another replica is healthy: the proxy
relays the replica's head at once, so it cannot retry elsewhere, and the session stays on the failing replica
for the next call too. Both servers. Project tree: $SAGA_TREE (default /tmp/snap47)."""

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
    log = open(tempfile.mktemp(prefix="d1b-", suffix=".log"), "w")
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
            data=json.dumps({"kind": "die_mid_stream", "after_chunks": 0, "duration_s": 60}).encode(),
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
        sdk = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=2)
        try:
            evs = list(
                sdk.chat.completions.create(
                    model="saga-sim",
                    messages=msg
                    + [{"role": "assistant", "content": "x"}, {"role": "user", "content": "next"}],
                    max_tokens=4,
                    stream=True,
                    extra_headers={"x-session-id": "agent-1"},
                )
            )
            print(
                f"OK: [{server}] stream served ({len(evs)} events) though its replica {bad} cuts streams before their first event"
            )
        except openai.APIError as e:
            print(
                f"DEFECT: [{server}] stream failed with {type(e).__name__} {e.message!r} before any event reached the client; "
                f"the healthy replica {good} served {served(good) - before:.0f} attempts"
            )
    finally:
        for p in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                p.wait(5)
        log.close()
        os.unlink(log.name)


run("fast", 22200, 22090)
run("aiohttp", 22210, 22095)
