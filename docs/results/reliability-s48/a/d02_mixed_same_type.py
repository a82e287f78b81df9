# ruff: noqa
"""d02: mixed traffic of one agent type (a chat app's system prompt): agents' growing conversations make
its one-shot calls hold KV between calls, and one-shot throughput collapses.

Checks: default `saga` vs `round-robin` on the same simulated replica (9,600 tokens, time scale 200), 40 s
each: 2 agent clients running growing conversations (8 calls, 0.3 s tool gap) and 4 one-shot clients, all
with the same system prompt, no session header (inferred sessions).
What a user sees: with saga the one-shot clients stop getting answers once the first agent call has come
back (the type is 'proven'); the agents' new conversations wait too; the replica is idle. round-robin
serves ~100x more one-shot calls and ~10x more agent calls.
What it should be: a one-shot call of a type whose other sessions come back should not hold ~1,000 tokens
for 120 s; at least, saga should not serve both kinds of traffic far worse than round-robin.
"""

# ---- harness (copied into each script) ----
import asyncio, json, os, signal, socket, subprocess, sys, time, itertools
import aiohttp

TREE = os.environ.get("SAGA_TREE", "/tmp/snap48")
WORK = "/tmp/rev48a"
_PROCS = []


def _port_open(port):
    s = socket.socket()
    s.settimeout(0.2)
    try:
        s.connect(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def start(args, log, ports, timeout=40):
    env = dict(os.environ, PYTHONPATH=TREE)
    f = open(os.path.join(WORK, log), "w")
    p = subprocess.Popen(
        [sys.executable, "-m", "proxy", *args],
        cwd=TREE,
        env=env,
        stdout=f,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    _PROCS.append(p)
    t0 = time.time()
    while time.time() - t0 < timeout:
        if all(_port_open(pt) for pt in ports):
            return p
        if p.poll() is not None:
            raise RuntimeError(f"{args} exited {p.returncode}; see {log}")
        time.sleep(0.2)
    raise RuntimeError(f"{args} not up in {timeout}s")


def stop(p):
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(5)


def stop_all():
    for p in reversed(_PROCS):
        stop(p)
    _PROCS.clear()


def sim(base, n=1, blocks=600, scale=200.0, profile="llama3-8b-h100", log=None):
    return start(
        [
            "sim",
            "--base-port",
            str(base),
            "--replicas",
            str(n),
            "--profile",
            profile,
            "--num-gpu-blocks-override",
            str(blocks),
            "--model",
            "saga-sim",
            "--time-scale",
            str(scale),
        ],
        log or f"sim{base}.log",
        [base + i for i in range(n)],
    )


def serve(port, replicas, policy="saga", extra=(), config=None, log=None):
    args = ["serve", "--port", str(port), "--health-interval-s", "0.2"] + (
        ["--policy", policy] if policy else []
    )
    for r in replicas:
        args += ["--replica", f"http://127.0.0.1:{r}"]
    if config is not None:
        path = os.path.join(WORK, f"cfg{port}.yaml")
        with open(path, "w") as fh:
            fh.write(config)
        args += ["--config", path]
    args += list(extra)
    p = start(args, log or f"proxy{port}.log", [port])
    time.sleep(1.0)  # first health probe / metrics scrape
    return p


async def chat(http, port, messages, headers=None, max_tokens=8, timeout=30.0, stream=False, system=None):
    body = {"model": "saga-sim", "messages": messages, "max_tokens": max_tokens}
    if stream:
        body["stream"] = True
    t0 = time.monotonic()
    try:
        async with http.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json=body,
            headers=headers or {},
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as r:
            text = await r.text()
            return r.status, time.monotonic() - t0, r.headers.get("X-Session-ID"), text
    except asyncio.TimeoutError:
        return "timeout", time.monotonic() - t0, None, ""


async def get_json(http, port, path):
    async with http.get(f"http://127.0.0.1:{port}{path}", timeout=aiohttp.ClientTimeout(total=10)) as r:
        return await r.json()


async def admission(http, port):
    return (await get_json(http, port, "/saga/v1/state")).get("admission", {})


def run_main(coro_fn):
    os.makedirs(WORK, exist_ok=True)
    try:
        line = asyncio.run(coro_fn())
    except Exception as e:  # noqa
        line = f"ERROR: {type(e).__name__}: {e}"
    finally:
        stop_all()
    print(line, flush=True)


# ---- end harness ----

SYSTEM = "You are a helpful assistant for the ACME support desk. Answer briefly and precisely. " * 4
DURATION = 40.0


async def agent(http, port, idx, stop_at, out):
    conv = 0
    while time.monotonic() < stop_at:
        conv += 1
        msgs = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"agent {idx} task {conv}: debug the build"},
        ]
        for step in range(8):
            if time.monotonic() >= stop_at:
                return
            st, dt, _, text = await chat(http, port, msgs, timeout=60)
            out["agent_calls"] += 1
            if st != 200:
                out["agent_fail"] += 1
                return
            answer = json.loads(text)["choices"][0]["message"]["content"]
            msgs += [
                {"role": "assistant", "content": answer},
                {"role": "user", "content": f"tool output {step}: " + "ok " * 30},
            ]
            await asyncio.sleep(0.3)


async def oneshot(http, port, idx, stop_at, out):
    n = 0
    while time.monotonic() < stop_at:
        n += 1
        st, dt, _, _ = await chat(
            http,
            port,
            [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"client {idx} question {n}: opening hours?"},
            ],
            timeout=max(1.0, stop_at - time.monotonic() + 1),
        )
        if st == 200:
            out["oneshot_ok"] += 1
            out["lat"].append(dt)
        else:
            out["oneshot_fail"] += 1


async def scenario(port):
    out = {"agent_calls": 0, "agent_fail": 0, "oneshot_ok": 0, "oneshot_fail": 0, "lat": []}
    async with aiohttp.ClientSession() as http:
        stop_at = time.monotonic() + DURATION
        await asyncio.gather(
            *(agent(http, port, i, stop_at, out) for i in range(2)),
            *(oneshot(http, port, i, stop_at, out) for i in range(4)),
        )
        state = await admission(http, port)
    out["state"] = state
    out["maxlat"] = max(out["lat"] or [0])
    return out


async def main():
    sim(22100, 1, blocks=600)
    p = serve(22110, [22100], "saga")
    s = await scenario(22110)
    stop(p)
    r = serve(22111, [22100], "round-robin")
    rr = await scenario(22111)
    msg = (
        f"{DURATION:.0f}s, 2 growing agents + 4 one-shot clients, one system prompt, 9,600-token replica: "
        f"saga one-shot ok={s['oneshot_ok']} (max latency {s['maxlat']:.1f}s, unfinished {s['oneshot_fail']}), agent calls={s['agent_calls']}, "
        f"reserved={s['state'].get('reserved_tokens')} live={s['state'].get('live')}; "
        f"round-robin one-shot ok={rr['oneshot_ok']} (max {rr['maxlat']:.2f}s), agent calls={rr['agent_calls']}"
    )
    if s["oneshot_ok"] < 0.5 * rr["oneshot_ok"]:
        return "DEFECT: " + msg
    return "OK: " + msg


if __name__ == "__main__":
    run_main(main)
