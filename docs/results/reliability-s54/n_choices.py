# ruff: noqa
"""Agents asking for `n` choices a call, through a proxy from SAGA_TREE (WORKERS workers) in front of two
simulated replicas from SIM_TREE (the simulator that samples `n` choices; default this checkout).

For each choice an agent goes on with (0, 1, 2) and whole or streamed answers: PAIRS pairs of agents, the two
of a pair given one task (one opening) at once, each call asking for 3 choices, 4 calls each. A pair is kept
when each agent's 4 calls are in one session and the two sessions differ. Prints one line per case and a
total. Run: SAGA_TREE=/path/to/tree WORKERS=2 python3 n_choices.py"""

import asyncio, contextlib, json, os, signal, subprocess, sys, time, urllib.request

import aiohttp

HERE = os.path.dirname(os.path.abspath(__file__))
TREE = os.environ.get("SAGA_TREE", os.path.abspath(os.path.join(HERE, "..", "..", "..")))
SIM_TREE = os.environ.get("SIM_TREE", os.path.abspath(os.path.join(HERE, "..", "..", "..")))
WORKERS = int(os.environ.get("WORKERS", "1"))
PAIRS = int(os.environ.get("PAIRS", "4"))
PORT = int(os.environ.get("PORT", "25400"))
LOG = os.environ.get("LOG", "/tmp/n_choices_logs")


def wait(url: str) -> None:
    end = time.time() + 60
    while time.time() < end:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError("not up: " + url)


@contextlib.contextmanager
def stack():
    os.makedirs(LOG, exist_ok=True)
    sim = [
        "python3",
        "-m",
        "proxy",
        "sim",
        "--replicas",
        "2",
        "--base-port",
        str(PORT + 1),
        "--time-scale",
        "50",
    ]
    proxy = [
        "python3",
        "-m",
        "proxy",
        "serve",
        "--port",
        str(PORT),
        "--workers",
        str(WORKERS),
        "--no-access-log",
    ]
    proxy += ["--replica", f"http://127.0.0.1:{PORT + 1}", "--replica", f"http://127.0.0.1:{PORT + 2}"]
    procs = [
        subprocess.Popen(
            sim,
            cwd=SIM_TREE,
            start_new_session=True,
            stdout=open(f"{LOG}/sim.log", "w"),
            stderr=subprocess.STDOUT,
        )
    ]
    try:
        wait(f"http://127.0.0.1:{PORT + 1}/health")
        wait(f"http://127.0.0.1:{PORT + 2}/health")
        procs.append(
            subprocess.Popen(
                proxy,
                cwd=TREE,
                start_new_session=True,
                stdout=open(f"{LOG}/proxy.log", "w"),
                stderr=subprocess.STDOUT,
            )
        )
        wait(f"http://127.0.0.1:{PORT}/health")
        yield f"http://127.0.0.1:{PORT}"
    finally:
        for p in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            p.wait(15)


async def call(url, messages, stream, max_tokens):
    body = {
        "model": "saga-sim",
        "messages": messages,
        "n": 3,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": stream,
    }
    # a connection of its own each call (with workers, the kernel picks the worker that reads it)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        async with http.post(f"{url}/v1/chat/completions", json=body) as r:
            assert r.status == 200, await r.text()
            session = r.headers["X-Session-ID"]
            if not stream:
                return session, [c["message"]["content"] for c in (await r.json())["choices"]]
            raw = await r.text()
    texts = ["", "", ""]
    for line in raw.splitlines():
        if line.startswith("data: {"):
            for c in json.loads(line[6:])["choices"]:
                texts[c["index"]] += c["delta"].get("content") or ""
    return session, texts


async def pair(url, tag, picked, stream):
    opening = [
        {"role": "system", "content": "You are a coding agent. " * 20},
        {"role": "user", "content": f"Fix test {tag}."},
    ]
    firsts = await asyncio.gather(*(call(url, opening, stream, 8 + i) for i in range(2)))  # (lengths differ)
    sessions = []
    for i, (session, texts) in enumerate(firsts):
        seen, messages = [session], list(opening)
        for step in range(3):
            messages = [
                *messages,
                {"role": "assistant", "content": texts[picked]},
                {"role": "user", "content": f"result {i}.{step}"},
            ]
            session, texts = await call(url, messages, stream, 8)
            seen.append(session)
        sessions.append(seen)
    return all(len(set(s)) == 1 for s in sessions) and sessions[0][0] != sessions[1][0]


async def main():
    with stack() as url:
        total = kept = 0
        for picked in (0, 1, 2):
            for stream in (False, True):
                results = [await pair(url, f"{picked}{stream}{k}", picked, stream) for k in range(PAIRS)]
                total, kept = total + len(results), kept + sum(results)
                print(
                    f"{os.path.basename(TREE)} workers={WORKERS} choice {picked} {'streamed' if stream else 'whole'}: "
                    f"{sum(results)} of {len(results)} pairs kept apart and whole",
                    flush=True,
                )
        print(f"{os.path.basename(TREE)} workers={WORKERS}: {kept} of {total} pairs", flush=True)


asyncio.run(main())
