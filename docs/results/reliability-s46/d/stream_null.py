# ruff: noqa
# ruff: noqa
"""Item 5: `"stream": null` (vLLM: no stream) on each call route, straight to the simulated replica and
through the proxy (`saga serve --simulate 1`, from $SAGA_TREE): a whole JSON answer, 200."""

import asyncio, json, os, re, signal, subprocess, sys, time

TREE = os.environ.get("SAGA_TREE", "/tmp/snap46e")
import aiohttp

PORT = 30481
BODIES = {
    "/v1/chat/completions": {
        "model": "saga-sim",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 3,
    },
    "/v1/completions": {"model": "saga-sim", "prompt": "hi", "max_tokens": 3},
    "/v1/responses": {"model": "saga-sim", "input": "hi", "max_output_tokens": 3},
    "/v1/messages": {"model": "saga-sim", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
}


async def main():
    log = open("/tmp/stream_null.log", "w")
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy.cli",
            "serve",
            "--simulate",
            "1",
            "--port",
            str(PORT),
            "--no-access-log",
        ],
        cwd=TREE,
        env=dict(os.environ, PYTHONPATH=TREE),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        async with aiohttp.ClientSession() as h:
            for _ in range(150):
                await asyncio.sleep(0.1)
                try:
                    async with h.get(f"http://127.0.0.1:{PORT}/health") as r:
                        if r.status == 200:
                            break
                except Exception:
                    pass
            text = open("/tmp/stream_null.log").read()
            sim = re.search(r"simulated replicas: (http://\S+)", text).group(1).rstrip(",")
            for base, label in ((sim, "sim"), (f"http://127.0.0.1:{PORT}", "proxy")):
                for path, body in BODIES.items():
                    for stream_opts in (False, True):
                        b = {**body, "stream": None}
                        if stream_opts:
                            b["stream_options"] = {"include_usage": True}
                            if path != "/v1/chat/completions" and path != "/v1/completions":
                                continue
                        async with h.post(base + path, json=b) as r:
                            t = await r.read()
                            ok = r.status == 200 and r.content_type == "application/json"
                            print(
                                ("OK" if ok else "DEFECT")
                                + f": {label} {path} stream null{' +stream_options' if stream_opts else ''}: {r.status} {r.content_type} {t[:90]!r}"
                            )
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(10)
        except Exception:
            os.killpg(p.pid, signal.SIGKILL)
        log.close()


asyncio.run(main())
