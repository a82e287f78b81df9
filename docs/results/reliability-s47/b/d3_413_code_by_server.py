# ruff: noqa
#!/usr/bin/env python3
"""DEFECT check: the openai SDK's APIStatusError for a body over max_body_bytes should carry the same .code and
message whichever server runs (docs/config.md: 'Same behaviour either way'). server: fast answers
code='request_too_large' and "request body over the proxy's limit of N bytes"; server: aiohttp answers
code=None and aiohttp's "Maximum request body size N exceeded." (saga_errors_total counts request_too_large on
both). Project tree: $SAGA_TREE (default /tmp/snap47)."""

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

seen = {}
for server, sp, pp in (("fast", 22150, 22050), ("aiohttp", 22160, 22060)):
    with stack(sp, pp, config={"server": server, "max_body_bytes": 20000}) as (url, reps):
        c = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        try:
            c.chat.completions.create(
                model="saga-sim", messages=[{"role": "user", "content": "x" * 30000}], max_tokens=4
            )
        except openai.APIStatusError as e:
            seen[server] = (e.status_code, e.code, e.message)
for k, v in seen.items():
    print(f"  {k}: status={v[0]} code={v[1]!r} message={v[2]!r}")
if seen["fast"][:2] == seen["aiohttp"][:2]:
    print("OK: both servers answer a too-large body with the same status and code")
else:
    print(
        f"DEFECT: a too-large body gets code={seen['fast'][1]!r} on fast but code={seen['aiohttp'][1]!r} on aiohttp"
    )
