# ruff: noqa
#!/usr/bin/env python3
"""DEFECT check: while the replica that stored a response is down (health probes failed), a continuation
(responses.create(previous_response_id=...)) is refused 503 + Retry-After 'the only one holding what this call
continues, is down', but responses.retrieve(id) of the same response is tried on the down replica and answered
502 'the replica holding this response failed: cannot connect to 127.0.0.1:PORT: ConnectionRefusedError(...)',
with no Retry-After (the SDK falls back to its own backoff) and the replica's internal address and a Python
exception repr in the message. Both servers. Project tree: $SAGA_TREE (default /tmp/snap47)."""

import contextlib, json, os, re, signal, socket, subprocess, sys, tempfile, time, urllib.request

TREE = os.environ.get("SAGA_TREE", "/tmp/snap47")


def wait_port(port, t=30):
    end = time.time() + t
    while time.time() < end:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} never opened")


@contextlib.contextmanager
def stack(sim_port, proxy_port, replicas=1, config=None):
    """Simulated replicas + a proxy (config: a dict written as the YAML/JSON file); killed on exit."""
    procs, log = [], open(tempfile.mktemp(prefix="saga-repro-", suffix=".log"), "w")
    cfg = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    json.dump(config or {}, cfg)
    cfg.close()
    try:
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "proxy",
                    "sim",
                    "--replicas",
                    str(replicas),
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
        reps = [f"http://127.0.0.1:{sim_port + i}" for i in range(replicas)]
        for i in range(replicas):
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
            "--config",
            cfg.name,
        ]
        for r in reps:
            cmd += ["--replica", r]
        procs.append(subprocess.Popen(cmd, cwd=TREE, stdout=log, stderr=log, start_new_session=True))
        url = f"http://127.0.0.1:{proxy_port}"
        wait_port(proxy_port)
        end = time.time() + 30
        while time.time() < end:
            with contextlib.suppress(Exception):
                if urllib.request.urlopen(url + "/health", timeout=2).status == 200:
                    break
            time.sleep(0.2)
        yield url, reps
    finally:
        for p in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            time.sleep(0.2)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                p.wait(5)
        log.close()
        os.unlink(log.name)
        os.unlink(cfg.name)


def fault(replica, **f):
    req = urllib.request.Request(
        replica + "/saga/v1/faults",
        data=json.dumps(f).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(req, timeout=5).read()


import openai

for server, sp, pp in (("fast", 22170, 22070), ("aiohttp", 22180, 22080)):
    with stack(sp, pp, config={"server": server, "health_interval_s": 0.3}) as (url, reps):
        c = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        r = c.responses.create(model="saga-sim", input="hi", max_output_tokens=4)
        fault(reps[0], kind="crash", duration_s=8)
        time.sleep(1.5)
        out = {}
        for tag, fn in (
            (
                "continue",
                lambda: c.responses.create(
                    model="saga-sim", input="x", previous_response_id=r.id, max_output_tokens=4
                ),
            ),
            ("retrieve", lambda: c.responses.retrieve(r.id)),
        ):
            try:
                fn()
                out[tag] = ("served",)
            except openai.APIStatusError as e:
                out[tag] = (e.status_code, e.response.headers.get("retry-after"), e.message)
        for k, v in out.items():
            print(f"  [{server}] {k}: {v}")
        if out["retrieve"][:2] == out["continue"][:2]:
            print(
                f"OK: [{server}] retrieve is refused as the continuation is ({out['retrieve'][0]}, Retry-After {out['retrieve'][1]})"
            )
        else:
            print(
                f"DEFECT: [{server}] retrieve of a response on a down replica -> {out['retrieve'][0]} Retry-After={out['retrieve'][1]} "
                f"(continuation -> {out['continue'][0]} Retry-After={out['continue'][1]})"
            )
