# ruff: noqa
import asyncio, json, os, signal, socket, subprocess, sys, time, contextlib, random
import aiohttp

PROCS = []
LOG = "/tmp/rev51/logs"


def wait_port(port, timeout=40):
    t = time.time()
    while time.time() - t < timeout:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    raise RuntimeError(f"port {port} not up")


def start(tree, args, log):
    p = subprocess.Popen(
        [sys.executable, "-m", "proxy", *args],
        cwd=tree,
        stdout=open(f"{LOG}/{log}", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": tree},
    )
    PROCS.append(p)
    return p


def start_sims(tree, base, n=2, profile="tiny-cpu", blocks=None, extra=()):
    args = ["sim", "--replicas", str(n), "--base-port", str(base), "--profile", profile, *extra]
    if blocks:
        args += ["--num-gpu-blocks-override", str(blocks)]
    p = start(tree, args, f"sim_{base}.log")
    for i in range(n):
        wait_port(base + i)
    return p, [f"http://127.0.0.1:{base + i}" for i in range(n)]


def start_proxy(tree, port, replicas, extra=()):
    args = ["serve", "--port", str(port), "--health-interval-s", "0.2", *extra]
    for r in replicas:
        args += ["--replica", r]
    p = start(tree, args, f"proxy_{port}.log")
    wait_port(port)
    return p, f"http://127.0.0.1:{port}"


def stop(p):
    with contextlib.suppress(Exception):
        os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(5)
    except Exception:
        with contextlib.suppress(Exception):
            os.killpg(p.pid, signal.SIGKILL)
    if p in PROCS:
        PROCS.remove(p)


def stop_all():
    for p in list(PROCS):
        stop(p)


async def wait_ready(sess, url, n, timeout=30):
    t = time.time()
    while time.time() - t < timeout:
        try:
            async with sess.get(url + "/saga/v1/replicas") as r:
                j = await r.json()
                reps = j.get("replicas", j) if isinstance(j, dict) else j
                ok = [x for x in reps if x.get("healthy") and x.get("kv_capacity_tokens")]
                if len(ok) >= n:
                    await asyncio.sleep(0.5)
                    return j
        except Exception:
            pass
        await asyncio.sleep(0.3)
    raise RuntimeError("proxy not ready")


async def post(sess, url, path, body, headers=None, timeout=120):
    t = time.time()
    async with sess.post(
        url + path, json=body, headers=headers or {}, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as r:
        txt = await r.text()
        return r.status, txt, time.time() - t, dict(r.headers)


async def chat(
    sess, url, messages, headers=None, max_tokens=16, timeout=120, stream=False, extra=None, raw_body=None
):
    body = {"model": "saga-sim", "messages": messages, "stream": stream}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if extra:
        body.update(extra)
    return await post(sess, url, "/v1/chat/completions", body, headers, timeout)


async def get(sess, url, path):
    async with sess.get(url + path) as r:
        return await r.json()


def words(n, seed):
    rnd = random.Random(seed)
    return " ".join(f"w{rnd.randrange(100000)}" for _ in range(n))


async def quiesce_state(sess, url, wait=3.0):
    await asyncio.sleep(wait)
    st = await get(sess, url, "/saga/v1/state")
    return st


def summarize(st):
    adm = st.get("admission", {})
    reps = {r["replica_id"]: (r.get("in_flight"), r.get("queued")) for r in st.get("replicas", [])}
    return dict(
        in_flight=st.get("in_flight"),
        spills=st.get("spills"),
        moves=st.get("moves"),
        reserved=adm.get("reserved_tokens"),
        beside=adm.get("beside_tokens", adm.get("beside")),
        reps=reps,
    )
