# ruff: noqa
#!/usr/bin/env python3
"""DEFECT check: a browser-based agent (openai-node / @anthropic-ai/sdk with dangerouslyAllowBrowser) must pass a
CORS preflight before each call. vLLM answers it (CORSMiddleware, --allowed-origins ['*'] by default: 200 with
Access-Control-Allow-Origin/-Methods/-Headers); SAGA answers OPTIONS /v1/chat/completions and /v1/messages with
405, so the browser never sends the call. Both servers. Project tree: $SAGA_TREE (default /tmp/snap47)."""

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


for server, sp, pp in (("fast", 22130, 22030), ("aiohttp", 22140, 22040)):
    with stack(sp, pp, config={"server": server}) as (url, reps):
        for path in ("/v1/chat/completions", "/v1/messages"):
            req = urllib.request.Request(
                url + path,
                method="OPTIONS",
                headers={
                    "Origin": "http://localhost:3000",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization,content-type,x-api-key,anthropic-version",
                },
            )
            try:
                r = urllib.request.urlopen(req, timeout=5)
                status, hdrs = r.status, r.headers
            except urllib.error.HTTPError as e:
                status, hdrs = e.code, e.headers
            allow = hdrs.get("Access-Control-Allow-Origin")
            if status < 300 and allow:
                print(f"OK: [{server}] OPTIONS {path} -> {status}, Access-Control-Allow-Origin: {allow}")
            else:
                print(
                    f"DEFECT: [{server}] CORS preflight OPTIONS {path} -> {status} (Access-Control-Allow-Origin: {allow}); a browser SDK cannot call through the proxy"
                )
