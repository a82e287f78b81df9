# ruff: noqa
"""D08: docs/saga-policy.md "Configuration (YAML, any subset)" - an operator cannot set one admission
setting of the `saga` preset (e.g. `admission.max_wait_s`, which the same page says to set below the
clients' timeout): there is no flag or SAGA_* variable for it, a `policy:` mapping with only `admission`
is refused ("Object missing required field `picker`"), and a spec that passes (with `picker`) silently drops
the rest of the preset: no scorers, retention, priority or stealing, and admission's own defaults, which
are not the page's values (`order: arrival` not `least-work`, `hold_price: null` not 1.0).

Setup: `saga serve --config` with (a) `policy: {admission: {max_wait_s: 60}}`, (b) the same plus
`picker: {type: max-score-picker}`; the AdmissionSpec defaults read from the tree.
What the operator sees: (a) refused naming `picker`; (b) starts as `policy custom` with the preset's other
mechanisms off.
What it should be: a subset overrides the preset's keys (or the docs say a spec replaces the preset
whole and show the preset's full spec with admission's real defaults).
"""

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


def try_config(body):
    port = free_port(23600, 23990)
    path = f"{WORK}/cfg_d08_{port}.yaml"
    open(path, "w").write(body)
    e = dict(os.environ, PYTHONPATH=TREE)
    p = subprocess.Popen(
        [
            "timeout",
            "20",
            sys.executable,
            "-m",
            "proxy",
            "serve",
            "--port",
            str(port),
            "--replica",
            "http://127.0.0.1:23999",
            "--config",
            path,
        ],
        cwd=TREE,
        env=e,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    PROCS.append(p)
    state = None
    for _ in range(30):
        if p.poll() is not None:
            break
        try:
            state = getj(f"http://127.0.0.1:{port}/saga/v1/state")
            break
        except Exception:
            time.sleep(0.3)
    if state is None:
        try:
            p.wait(5)
        except Exception:
            pass
        out = p.stdout.read().decode(errors="replace") if p.poll() is not None else ""
        return None, out.strip().splitlines()[-1] if out.strip() else "no output"
    return state, None


def main():
    st_a, err_a = try_config("policy:\n  admission: {max_wait_s: 60}\n")
    st_b, err_b = try_config("policy:\n  picker: {type: max-score-picker}\n  admission: {max_wait_s: 60}\n")
    st_p, _ = try_config("policy: saga\n")
    code = (
        "import sys; sys.path.insert(0, %r); from proxy.scheduler.specs import AdmissionSpec as A; "
        "from proxy.scheduler.registry import PRESETS as P; a=A(); s=P['saga']; "
        "print(a.order, a.hold_price, s.admission.order, s.admission.hold_price, len(s.scorers), s.retention is not None, s.prioritize, s.stealing is not None)"
    ) % TREE
    facts = (
        subprocess.check_output([sys.executable, "-c", code], cwd=TREE, env=dict(os.environ, PYTHONPATH=TREE))
        .decode()
        .split()
    )
    if err_a or (st_b and st_b.get("policy") == "custom"):
        print(
            f"DEFECT: policy subset {{admission: {{max_wait_s: 60}}}} -> {err_a!r}; with picker added -> starts as policy "
            f"{st_b and st_b.get('policy')!r} (preset: {st_p and st_p.get('policy')!r}) and AdmissionSpec defaults order={facts[0]} "
            f"hold_price={facts[1]} vs preset/docs order={facts[2]} hold_price={facts[3]}; preset's {facts[4]} scorers, "
            f"retention={facts[5]}, prioritize={facts[6]}, stealing={facts[7]} all dropped"
        )
    else:
        print(f"OK: subset accepted as an override ({st_a and st_a.get('policy')})")


try:
    main()
finally:
    stop_all()
