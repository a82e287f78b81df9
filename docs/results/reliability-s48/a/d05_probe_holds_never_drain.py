# ruff: noqa
"""d05: once a proven agent type is learned to 'rarely come back', its probe holds (one finish a second
holds for max_hold_s) keep filling a small replica: one-shot calls keep stalling, again and again, not once.

Checks: the saga preset's spec with `admission.max_hold_s: 10` (to see in 80 s what the default 120 s does
in ~16 min; with 120 s the probes hold up to 120 reservations of ~1,000 tokens: ~120k tokens, so any replica
under ~84k tokens of KV stays full), one simulated replica of 300 blocks (4,800 tokens), time scale 200. A
two-turn chat (no system prompt) proves agent type `default`; then 4 clients send distinct one-shot calls
(no system prompt, no session) for 80 s. Counts answers per 10 s window, and in the last 40 s (well past
the 32 unused hold outcomes after which the type lapses its holds) samples the replica's running requests.
What a user sees: after the first 120 s-equivalent stall, throughput comes back in bursts, then stalls
again for ~10 s (120 s by default) each time the probe holds pile up past the room: windows of ~30 answers
with the replica idle between windows of thousands; round-robin answers ~15,000 in every 10 s.
What it should be: once the type is learned to rarely come back, its holds should stop keeping new work
waiting (probes should not reserve, or reserve only within free room).
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

CFG = """policy:
  picker: {type: max-score-picker}
  scorers:
    - {type: session-affinity-scorer, weight: 4}
    - {type: prefix-cache-scorer, weight: 0.2}
    - {type: kv-headroom-scorer, weight: 0.5}
    - {type: least-request-scorer, weight: 1}
  retention: {type: predicted-ttl-retention, params: {priority_base_s: null}}
  admission: {order: least-work, hold_price: 1.0, max_hold_s: 10}
  prioritize: "workflow-age"
  stealing: {rebalance_above: 1.0}
"""
DUR = 80.0


async def scenario(port, dur):
    async with aiohttp.ClientSession() as http:
        msgs = [{"role": "user", "content": "Hi, can you help me plan a trip to Lisbon?"}]
        await chat(http, port, msgs)
        msgs += [
            {"role": "assistant", "content": "Sure, what dates?"},
            {"role": "user", "content": "Next May, 5 days."},
        ]
        await chat(http, port, msgs)
        t0 = time.monotonic()
        stop_at = t0 + dur
        done = []
        running = []
        reserved = []

        async def client(idx):
            n = 0
            while time.monotonic() < stop_at:
                n += 1
                st, dt, _, _ = await chat(
                    http,
                    port,
                    [{"role": "user", "content": f"client {idx} question {n}: what is {n} squared?"}],
                    timeout=max(0.5, stop_at - time.monotonic()),
                )
                if st == 200:
                    done.append(time.monotonic() - t0)

        async def sample():
            while time.monotonic() < stop_at - 1:
                await asyncio.sleep(1)
                if time.monotonic() - t0 < dur / 2:
                    continue
                async with http.get("http://127.0.0.1:22900/metrics") as r:
                    for line in (await r.text()).splitlines():
                        if line.startswith("vllm:num_requests_running"):
                            running.append(float(line.split()[-1]))
                a = await admission(http, port)
                if a:
                    reserved.append(sum(a.get("reserved_tokens", {}).values()))

        await asyncio.gather(sample(), *(client(i) for i in range(4)))
        windows = [sum(1 for t in done if w * 10 <= t < (w + 1) * 10) for w in range(int(dur // 10))]
        return windows, running, reserved


async def main():
    sim(22900, 1, blocks=300)
    p = serve(22910, [22900], None, config=CFG)
    w, running, reserved = await scenario(22910, DUR)
    stop(p)
    r = serve(22911, [22900], "round-robin")
    rw, _, _ = await scenario(22911, 10.0)
    first = next((i for i, x in enumerate(w) if x > 0.2 * rw[0]), None)
    later = w[first + 1 :] if first is not None else []
    stalled = sum(1 for x in later if x < 0.02 * rw[0])
    msg = (
        f"saga (max_hold_s 10), one-shot answers per 10 s window: {w}; after the type began lapsing its holds (window {first}), "
        f"{stalled} of {len(later)} later windows stalled (<2% of round-robin's); in the last {DUR / 2:.0f} s the replica ran "
        f"{sum(running) / max(1, len(running)):.2f} requests on average while admission reserved {sum(reserved) / max(1, len(reserved)):.0f} tokens "
        f"on average (4,800 x overcommit 1.5 = 7,200); round-robin: {rw[0]} answers in 10 s"
    )
    if first is None or stalled:
        return "DEFECT: " + msg
    return "OK: " + msg


if __name__ == "__main__":
    run_main(main)
