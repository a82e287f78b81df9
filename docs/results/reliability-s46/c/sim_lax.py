# ruff: noqa
"""Item 3: the simulator's lax body reading (strict=False). Every route still answers; lax values vLLM (pydantic
lax) takes work through the proxy; values vLLM refuses are refused by the simulator too."""

import asyncio, json, os, subprocess, sys, time

TREE = os.environ.get("SAGA_TREE", "/tmp/snap46d")
import aiohttp

SIM, PROXY = 29300, 29305


def start(args):
    return subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", *args],
        cwd=TREE,
        env=dict(os.environ, PYTHONPATH=TREE),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait(url):
    for _ in range(150):
        try:
            async with aiohttp.ClientSession() as h, h.get(url + "/health") as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit(f"no {url}")


CHAT = {"model": "saga-sim", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


async def main():
    procs = [start(["sim", "--replicas", "1", "--base-port", str(SIM), "--time-scale", "20"])]
    try:
        sim = f"http://127.0.0.1:{SIM}"
        await wait(sim)
        procs.append(start(["serve", "--replica", sim, "--port", str(PROXY), "--health-interval-s", "30"]))
        px = f"http://127.0.0.1:{PROXY}"
        await wait(px)
        async with aiohttp.ClientSession() as h:

            async def call(base, method, path, body=None):
                async with h.request(method, base + path, json=body) as r:
                    return (
                        r.status,
                        r.headers.get("Content-Type", ""),
                        (await r.read()).decode("utf-8", "replace"),
                    )

            def line(ok, what):
                print(("OK" if ok else "DEFECT") + ": " + what, flush=True)

            routes = [
                ("POST", "/v1/chat/completions", CHAT),
                ("POST", "/v1/chat/completions", {**CHAT, "stream": True}),
                ("POST", "/v1/completions", {"model": "saga-sim", "prompt": "hi", "max_tokens": 8}),
                (
                    "POST",
                    "/v1/completions",
                    {"model": "saga-sim", "prompt": "hi", "max_tokens": 8, "stream": True},
                ),
                ("POST", "/v1/responses", {"model": "saga-sim", "input": "hi", "max_output_tokens": 8}),
                (
                    "POST",
                    "/v1/responses",
                    {"model": "saga-sim", "input": "hi", "max_output_tokens": 8, "stream": True},
                ),
                (
                    "POST",
                    "/v1/messages",
                    {"model": "saga-sim", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
                ),
                (
                    "POST",
                    "/v1/messages",
                    {
                        "model": "saga-sim",
                        "max_tokens": 8,
                        "messages": [{"role": "user", "content": "hi"}],
                        "stream": True,
                    },
                ),
                (
                    "POST",
                    "/v1/messages/count_tokens",
                    {"model": "saga-sim", "messages": [{"role": "user", "content": "hi"}]},
                ),
                ("POST", "/tokenize", {"model": "saga-sim", "prompt": "hello there"}),
                ("POST", "/detokenize", {"model": "saga-sim", "tokens": [1, 2, 3]}),
            ]
            for m, p, b in routes:
                for base, who in ((sim, "sim"), (px, "proxy")):
                    if who == "proxy" and p in ("/tokenize", "/detokenize", "/v1/messages/count_tokens"):
                        continue
                    st, ct, text = await call(base, m, p, b)
                    line(st == 200, f"{who} {p} stream={b.get('stream', False)}: {st} {ct[:20]}")
            # faults admin API (sim)
            st1, _, t1 = await call(
                sim, "POST", "/saga/v1/faults", {"kind": "slow", "factor": 2, "duration_s": 5}
            )
            st2, _, t2 = await call(sim, "GET", "/saga/v1/faults")
            st3, _, t3 = await call(sim, "DELETE", "/saga/v1/faults")
            st4, _, t4 = await call(sim, "POST", "/saga/v1/faults", {"kind": "nosuch"})
            line(
                (st1, st2, st3, st4) == (200, 200, 200, 400),
                f"faults API post/get/delete/bad: {st1} {st2} {st3} {st4}",
            )
            # lax values vLLM takes, through the proxy: a stream, usage as asked
            for label, extra, usage_wanted in (
                (
                    'stream "true" + include_usage "true"',
                    {"stream": "true", "stream_options": {"include_usage": "true"}},
                    True,
                ),
                ("stream 1, no include_usage", {"stream": 1}, False),
                (
                    'stream "1", include_usage 1',
                    {"stream": "1", "stream_options": {"include_usage": 1}},
                    True,
                ),
                ('max_tokens "8"', {"max_tokens": "8", "stream": True}, False),
            ):
                st, ct, text = await call(px, "POST", "/v1/chat/completions", {**CHAT, **extra})
                has_usage = '"usage":{' in text.replace(" ", "") and '"usage":null' not in text.replace(
                    " ", ""
                )
                ok = (
                    st == 200
                    and ct.startswith("text/event-stream")
                    and has_usage == usage_wanted
                    and text.rstrip().endswith("[DONE]")
                )
                line(ok, f"proxy chat {label}: {st} {ct[:17]} usage chunk={has_usage} (want {usage_wanted})")
            # values vLLM (pydantic v2 lax) refuses: the simulator should refuse them too (400)
            for label, extra in (
                ('max_tokens "null" (a string)', {"max_tokens": "null"}),
                ("max_tokens 8.5", {"max_tokens": 8.5}),
                ("stream 2", {"stream": 2}),
                ("model 5", {"model": 5}),
                ('max_tokens "8.5"', {"max_tokens": "8.5"}),
            ):
                st, _, text = await call(sim, "POST", "/v1/chat/completions", {**CHAT, **extra})
                line(st == 400, f"sim refuses what vLLM refuses: {label}: {st} {text[:80]!r}")
            # values vLLM takes: the simulator should take them too
            for label, extra in (("stream null", {"stream": None}), ('stream "yes"', {"stream": "yes"})):
                st, _, text = await call(sim, "POST", "/v1/chat/completions", {**CHAT, **extra})
                line(st == 200, f"sim takes what vLLM takes: {label}: {st} {text[:80]!r}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)


asyncio.run(main())
