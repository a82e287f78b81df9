# ruff: noqa
"""d03: plain one-shot traffic (no sessions, no agents): saga retains each call's KV in the engine for
sessions that never return, and serves ~40% fewer calls than round-robin.

Checks: default `saga` vs `round-robin` on one simulated replica (600 blocks of 16, time scale 20), 16
clients each sending distinct one-shot ~1,500-token prompts (no system prompt, no session), 20 s each.
Samples the replica's running/waiting requests and `/saga/v1/retained`; a third run uses the saga preset's
spec with its `retention` plugin left out (attribution).
What a user sees: saga's throughput well below round-robin's, with the engine holding ~half of its KV as
retentions of one-shot sessions (at the workflow's own priority, so newer calls cannot break them) and
fewer requests running; admission also keeps ~5 calls waiting (each in-flight one-shot reserves its prompt
plus ~1,000 tokens of the prior's growth, a type that never grows).
What it should be: the admission fix (a type not seen back holds nothing between calls) should apply to
the engine-side retention too; one-shot traffic should be served about as well as round-robin.
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

import random


async def client(http, port, idx, stop_at, out):
    rng = random.Random(idx)
    n = 0
    while time.monotonic() < stop_at:
        n += 1
        msgs = [
            {
                "role": "user",
                "content": f"client {idx} question {n}: summarise " + "word " * rng.randint(1000, 1400),
            }
        ]
        st, dt, _, _ = await chat(
            http, port, msgs, max_tokens=64, timeout=max(1.0, stop_at - time.monotonic() + 1)
        )
        if st == 200:
            out["ok"] += 1
        else:
            out["fail"] += 1


async def scenario(port, nclients=16, dur=20.0):
    out = {"ok": 0, "fail": 0, "running": [], "waiting": [], "retained": []}
    async with aiohttp.ClientSession() as http:
        stop_at = time.monotonic() + dur

        async def sample():
            while time.monotonic() < stop_at - 1:
                await asyncio.sleep(1)
                async with http.get("http://127.0.0.1:22300/metrics") as r:
                    for line in (await r.text()).splitlines():
                        if line.startswith("vllm:num_requests_running"):
                            out["running"].append(float(line.split()[-1]))
                        if line.startswith("vllm:num_requests_waiting"):
                            out["waiting"].append(float(line.split()[-1]))
                async with http.get("http://127.0.0.1:22300/saga/v1/retained") as r:
                    out["retained"].append((await r.json()).get("num_blocks", 0))

        await asyncio.gather(sample(), *(client(http, port, i, stop_at, out) for i in range(nclients)))
    avg = lambda xs: sum(xs) / max(1, len(xs))
    return out["ok"], avg(out["running"]), avg(out["waiting"]), avg(out["retained"]), out["fail"]


NORET = """policy:
  picker: {type: max-score-picker}
  scorers:
    - {type: session-affinity-scorer, weight: 4}
    - {type: prefix-cache-scorer, weight: 0.2}
    - {type: kv-headroom-scorer, weight: 0.5}
    - {type: least-request-scorer, weight: 1}
  admission: {order: least-work, hold_price: 1.0}
  prioritize: "workflow-age"
  stealing: {rebalance_above: 1.0}
"""


async def main():
    sim(22300, 1, blocks=600, scale=20.0)
    p = serve(22310, [22300], "saga")
    s = await scenario(22310)
    stop(p)
    r = serve(22311, [22300], "round-robin")
    rr = await scenario(22311)
    stop(r)
    q = serve(22312, [22300], None, config=NORET)  # the saga preset, its retention plugin left out
    nr = await scenario(22312)
    msg = (
        f"16 clients of one-shot ~1,500-token prompts, 20 s each, 600-block replica: saga {s[0]} calls "
        f"(engine running {s[1]:.1f} / waiting {s[2]:.1f} on average, {s[3]:.0f} of 600 blocks retained for sessions that never return), "
        f"round-robin {rr[0]} calls (running {rr[1]:.1f} / waiting {rr[2]:.1f}, retained {rr[3]:.0f}); saga/rr = {s[0] / max(1, rr[0]):.2f}; "
        f"the saga preset without its retention plugin: {nr[0]} calls (retained {nr[3]:.0f})"
    )
    if s[0] < 0.8 * rr[0]:
        return "DEFECT: " + msg
    return "OK: " + msg


if __name__ == "__main__":
    run_main(main)
