# ruff: noqa
import asyncio, json, os, signal, socket, subprocess, sys, time, contextlib
import aiohttp

TREE = os.environ.get("SAGA_TREE", "/tmp/snap49")
PROCS = []


def wait_port(port, timeout=30):
    t = time.time()
    while time.time() - t < timeout:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    raise RuntimeError(f"port {port} not up")


def start(args, log):
    p = subprocess.Popen(
        [sys.executable, "-m", "proxy", *args],
        cwd=TREE,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    PROCS.append(p)
    return p


def start_sims(base, n=2, profile="tiny-cpu", blocks=None, extra=()):
    args = ["sim", "--replicas", str(n), "--base-port", str(base), "--profile", profile, *extra]
    if blocks:
        args += ["--num-gpu-blocks-override", str(blocks)]
    start(args, f"/tmp/reviewA/sim_{base}.log")
    for i in range(n):
        wait_port(base + i)
    return [f"http://127.0.0.1:{base + i}" for i in range(n)]


def start_proxy(port, replicas, policy="saga", extra=()):
    args = ["serve", "--port", str(port), "--policy", policy, "--health-interval-s", "0.5", *extra]
    for r in replicas:
        args += ["--replica", r]
    start(args, f"/tmp/reviewA/proxy_{port}.log")
    wait_port(port)
    return f"http://127.0.0.1:{port}"


def stop_all():
    for p in PROCS:
        with contextlib.suppress(Exception):
            os.killpg(p.pid, signal.SIGTERM)
    for p in PROCS:
        try:
            p.wait(5)
        except Exception:
            with contextlib.suppress(Exception):
                os.killpg(p.pid, signal.SIGKILL)
    PROCS.clear()


async def wait_ready(sess, url, timeout=20):
    t = time.time()
    while time.time() - t < timeout:
        try:
            async with sess.get(url + "/saga/v1/replicas") as r:
                j = await r.json()
                reps = j.get("replicas", j) if isinstance(j, dict) else j
                ok = [
                    x
                    for x in reps
                    if x.get("healthy", x.get("up"))
                    and (x.get("kv_capacity_tokens") or x.get("capacity_tokens") or 1)
                ]
                if len(ok) == len(reps) and reps:
                    await asyncio.sleep(1.5)
                    return j
        except Exception:
            pass
        await asyncio.sleep(0.3)
    raise RuntimeError("proxy not ready")


async def chat(sess, url, messages, headers=None, max_tokens=16, timeout=120, stream=False, extra=None):
    body = {"model": "saga-sim", "messages": messages, "max_tokens": max_tokens, "stream": stream}
    if extra:
        body.update(extra)
    t = time.time()
    async with sess.post(
        url + "/v1/chat/completions",
        json=body,
        headers=headers or {},
        timeout=aiohttp.ClientTimeout(total=timeout),
    ) as r:
        txt = await r.text()
        return r.status, txt, time.time() - t, dict(r.headers)


async def get(sess, url, path):
    async with sess.get(url + path) as r:
        return await r.json()


def words(n, seed):
    import random

    rnd = random.Random(seed)
    return " ".join(f"w{rnd.randrange(100000)}" for _ in range(n))


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "bash",
            "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}},
        },
    }
]


async def agent(
    sess,
    url,
    aid,
    ncalls,
    tool_words=60,
    sys_words=200,
    headers=None,
    compact_every=None,
    compact_keep_system=True,
    max_tokens=16,
    log=None,
    think=0.0,
    timeout=300,
    stream=False,
    summary_words=80,
):
    """A coding agent: system prompt, task, then tool loop. Returns list of (status, latency)."""
    system = {"role": "system", "content": "You are a coding agent. " + words(sys_words, 7)}
    task = {"role": "user", "content": f"Task {aid}: " + words(40, 1000 + aid)}
    msgs = [system, task]
    out = []
    for i in range(ncalls):
        if compact_every and i and i % compact_every == 0:
            summ = {
                "role": "user",
                "content": f"Summary of work so far for task {aid} part {i}: "
                + words(summary_words, 5000 + aid * 100 + i),
            }
            msgs = ([system] if compact_keep_system else []) + [summ]
        extra = {"tools": TOOLS, "vllm_xargs": {"saga_sim_tool_turns": 1000}}
        try:
            st, txt, dt, h = await chat(
                sess,
                url,
                msgs,
                headers=headers,
                max_tokens=max_tokens,
                timeout=timeout,
                stream=stream,
                extra=extra,
            )
        except asyncio.TimeoutError:
            out.append((-1, timeout, None))
            break
        out.append((st, dt, h.get("X-Session-ID") or h.get("x-session-id")))
        if log is not None:
            log.append(
                (aid, i, st, dt, h.get("X-Saga-Replica"), h.get("X-Session-ID"), len(json.dumps(msgs)))
            )
        if st != 200:
            break
        j = json.loads(txt)
        m = j["choices"][0]["message"]
        am = {"role": "assistant", "content": m.get("content")}
        if m.get("tool_calls"):
            am["tool_calls"] = m["tool_calls"]
        msgs.append(am)
        if m.get("tool_calls"):
            for tc in m["tool_calls"]:
                msgs.append(
                    {"role": "tool", "tool_call_id": tc["id"], "content": words(tool_words, aid * 1000 + i)}
                )
        else:
            msgs.append({"role": "user", "content": "continue " + words(10, i)})
        if think:
            await asyncio.sleep(think)
    return out
