# ruff: noqa
"""d01: one growing chat conversation makes every later one-shot call of its agent type hold KV for 120 s.

Checks: default `saga` policy, one simulated replica of 9,600 tokens (600 blocks of 16). A user first has a
two-turn chat (no system prompt, no session header: inferred session, agent type `default`), its second call
longer than its first. Then sequential, distinct one-shot questions (no system prompt, no session), each
waited for before the next.
What a user sees: after ~14 one-shot calls the next one hangs (>15 s here; until the 120 s `max_hold_s`
holds lapse) while the replica has nothing running; round-robin answers all 40 in ~0.1 s.
What it should be: one-shot calls never wait for KV reserved for one-shot sessions that never come back
(the contract's own example: 'the 15th sequential call waited two minutes with nothing running'), whatever
another session of the same agent type did.
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


async def scenario(port):
    async with aiohttp.ClientSession() as http:
        # a user chats twice in one conversation (no system prompt, no session header): it grows
        msgs = [{"role": "user", "content": "Hi, can you help me plan a trip to Lisbon?"}]
        await chat(http, port, msgs)
        msgs += [
            {"role": "assistant", "content": "Sure, what dates?"},
            {"role": "user", "content": "Next May, 5 days."},
        ]
        await chat(http, port, msgs)
        samples = []

        async def sampler():
            while True:
                await asyncio.sleep(1)
                async with http.get("http://127.0.0.1:22000/metrics") as r:
                    for line in (await r.text()).splitlines():
                        if line.startswith("vllm:num_requests_running"):
                            samples.append((time.monotonic(), float(line.split()[-1])))

        task = asyncio.create_task(sampler())
        # then one-shot calls, one after another, none naming a session, no system prompt
        lat, bad = [], 0
        t0 = time.monotonic()
        for n in range(40):
            ts = time.monotonic()
            st, dt, _, _ = await chat(
                http, port, [{"role": "user", "content": f"question {n}: what is {n} squared?"}], timeout=15
            )
            lat.append(dt)
            if st != 200:
                bad += 1
                break
        task.cancel()
        during = [v for t, v in samples if t > ts + 1]
        state = await admission(http, port)
        return max(lat), len(lat), bad, time.monotonic() - t0, state, during


async def main():
    sim(22000, 1, blocks=600)
    p = serve(22010, [22000], "saga")
    s = await scenario(22010)
    stop(p)
    r = serve(22011, [22000], "round-robin")
    rr = await scenario(22011)
    msg = (
        f"saga: call #{s[1]} of 40 unanswered after {s[0]:.1f}s (failed/timed out: {s[2]}), replica running during the wait: max {max(s[5] or [-1]):.0f}, "
        f"admission reserved={sum(s[4].get('reserved_tokens', {}).values())} tokens of 9,600; "
        f"round-robin: {rr[1]} calls, max latency {rr[0]:.2f}s, failed {rr[2]}, total {rr[3]:.1f}s"
    )
    if s[2] or s[0] > 5:
        return "DEFECT: " + msg
    return "OK: " + msg


if __name__ == "__main__":
    run_main(main)
