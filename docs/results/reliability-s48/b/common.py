# ruff: noqa
import asyncio, json, os, signal, socket, subprocess, sys, time, urllib.request

TREE = os.environ.get("SAGA_TREE", "/tmp/snap48")
WORK = "/tmp/rev48b"
PROCS = []


def free_port(lo, hi):
    for p in range(lo, hi):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
            s.close()
            return p
        except OSError:
            s.close()
    raise SystemExit("no port")


def start(args, name, env=None):
    e = dict(os.environ, PYTHONPATH=TREE)
    e.update(env or {})
    log = open(f"{WORK}/{name}.log", "w")
    p = subprocess.Popen(
        ["timeout", "170", sys.executable, "-m", "proxy", *args],
        cwd=TREE,
        env=e,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    PROCS.append(p)
    return p


def stop_all():
    for p in PROCS:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in PROCS:
        try:
            p.wait(5)
        except Exception:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def getj(url):
    return json.loads(get(url))


def wait_up(url, t=40):
    end = time.time() + t
    while time.time() < end:
        try:
            get(url, 2)
            return True
        except Exception:
            time.sleep(0.3)
    raise SystemExit(f"not up: {url}")


def metric(text, name, labels=None):
    tot = None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if line.startswith(name + " ") or line.startswith(name + "{"):
            if labels and not all(f'{k}="{v}"' in line for k, v in labels.items()):
                continue
            tot = (tot or 0) + float(line.rsplit(" ", 1)[1])
    return tot


def fleet(blocks=60, replicas=1, scale=1.0, config=None, extra=(), env=None, base=None):
    base = base or free_port(23100, 23500)
    start(
        [
            "sim",
            "--base-port",
            str(base),
            "--replicas",
            str(replicas),
            "--profile",
            "llama3-8b-h100",
            "--num-gpu-blocks-override",
            str(blocks),
            "--model",
            "saga-sim",
            "--time-scale",
            str(scale),
        ],
        "sim",
    )
    for i in range(replicas):
        wait_up(f"http://127.0.0.1:{base + i}/health")
    port = free_port(base + replicas + 1, 23990)
    args = ["serve", "--port", str(port), "--time-scale", str(scale)]
    for i in range(replicas):
        args += ["--replica", f"http://127.0.0.1:{base + i}"]
    if config:
        path = f"{WORK}/cfg_{port}.yaml"
        open(path, "w").write(config)
        args += ["--config", path]
    args += list(extra)
    start(args, f"serve_{port}", env)
    wait_up(f"http://127.0.0.1:{port}/health")
    return f"http://127.0.0.1:{port}", [f"http://127.0.0.1:{base + i}" for i in range(replicas)]


WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()


def text(n, seed):
    return " ".join(WORDS[(seed * 7 + i * 3) % len(WORDS)] + str((seed + i) % 97) for i in range(n))


async def call(session, proxy, sid, messages, agent="coder", max_tokens=64, timeout=120, headers=None):
    import aiohttp

    h = {"X-Session-ID": sid, "X-Agent-Type": agent}
    h.update(headers or {})
    body = {"model": "saga-sim", "messages": messages, "max_tokens": max_tokens}
    t0 = time.time()
    async with session.post(
        proxy + "/v1/chat/completions", json=body, headers=h, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as r:
        data = await r.read()
        return r.status, time.time() - t0, data, dict(r.headers)


async def agent(
    session,
    proxy,
    sid,
    calls=4,
    first=400,
    tool=200,
    gap=0.5,
    agent_type="coder",
    out=None,
    max_tokens=64,
    headers=None,
):
    msgs = [
        {"role": "system", "content": "You are agent " + agent_type},
        {"role": "user", "content": text(first, hash(sid) % 1000)},
    ]
    res = []
    for i in range(calls):
        st, dt, data, hd = await call(session, proxy, sid, msgs, agent_type, max_tokens, headers=headers)
        res.append((st, dt, hd))
        if out is not None:
            out.append((sid, i, st, dt, time.time(), hd))
        if st != 200:
            break
        try:
            ans = json.loads(data)["choices"][0]["message"].get("content") or "ok"
        except Exception:
            ans = "ok"
        msgs = msgs + [
            {"role": "assistant", "content": ans},
            {"role": "user", "content": "tool result: " + text(tool, i)},
        ]
        await asyncio.sleep(gap)
    return res
