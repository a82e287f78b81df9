# ruff: noqa
"""Mixed-load soak of SAGA (/tmp/snap53a): 2 workers, 3 sim replicas (two at time-scale 20, one at 8 = slower),
400 KV blocks each. Bounded clients, each loop ends at DEADLINE. Samples every 30 s. Output: /tmp/rev53s/soak-out.txt
and soak-samples.jsonl."""

import asyncio, json, os, random, signal, subprocess, sys, time, collections
import aiohttp

TREE = os.environ.get("SAGA_TREE", "/tmp/snap53a")
OUT = os.environ.get("OUT", "/tmp/rev53s")
BLOCKS = os.environ.get("BLOCKS", "400")  # KV blocks a replica (128 tokens each on tiny-cpu)
# where samples and the summary go, and how many 30-second samples follow the load (the drain check:
# DUR=60 TAILN=6 SAMPLES=/tail-samples.jsonl SOUT=/tail-out.txt)
SAMPLES = os.environ.get("SAMPLES", "/soak-samples.jsonl")
SOUT = os.environ.get("SOUT", "/soak-out.txt")
TAILN = int(os.environ.get("TAILN", 2))
LOG = OUT + "/logs"
SIM = 28000
PORT = 28010
DUR = float(os.environ.get("DUR", 1080))
CALL_TIMEOUT = 120
procs = []
URL = f"http://127.0.0.1:{PORT}"
stats = collections.Counter()  # (kind, status) -> n
hung = []
errors = []
sess_ids = collections.defaultdict(set)  # kind -> set of X-Session-ID
compaction_keep = collections.Counter()
out_lines = []


def say(s):
    print(s, flush=True)
    out_lines.append(s)


def words(n, seed):
    r = random.Random(seed)
    return " ".join(f"w{r.randrange(100000)}" for _ in range(n))


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "bash",
            "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}},
        },
    }
]


def start(args, log):
    p = subprocess.Popen(
        [sys.executable, "-m", "proxy", *args],
        cwd=TREE,
        start_new_session=True,
        stdout=open(f"{LOG}/{log}", "w"),
        stderr=subprocess.STDOUT,
    )
    procs.append(p)
    return p


def stop_all():
    for p in reversed(procs):
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


async def wait_up(s, url):
    for _ in range(200):
        try:
            async with s.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("not up " + url)


async def call(s, kind, body, headers=None, raw=None):
    """One call; returns (status, json or None, headers). Records status; 'timeout' counts as hung."""
    t0 = time.time()
    try:
        kw = (
            {"data": raw, "headers": {"Content-Type": "application/json", **(headers or {})}}
            if raw is not None
            else {"json": body, "headers": headers or {}}
        )
        async with s.post(
            URL + "/v1/chat/completions", timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT), **kw
        ) as r:
            txt = await r.text()
            stats[(kind, r.status)] += 1
            if r.status >= 500 or (r.status >= 400 and kind != "bad"):
                errors.append((round(time.time() - T0), kind, r.status, txt[:300]))
            sid = r.headers.get("X-Session-ID")
            try:
                j = json.loads(txt)
            except Exception:
                j = None
            return r.status, j, sid
    except asyncio.TimeoutError:
        stats[(kind, "timeout")] += 1
        hung.append((round(t0 - T0), kind, round(time.time() - t0)))
        return "timeout", None, None
    except Exception as e:
        stats[(kind, type(e).__name__)] += 1
        errors.append((round(time.time() - T0), kind, type(e).__name__, str(e)[:200]))
        return type(e).__name__, None, None


def append_answer(msgs, j, seed):
    m = j["choices"][0]["message"]
    am = {"role": "assistant", "content": m.get("content")}
    if m.get("tool_calls"):
        am["tool_calls"] = m["tool_calls"]
    msgs.append(am)
    for tc in m.get("tool_calls") or ():
        msgs.append({"role": "tool", "tool_call_id": tc["id"], "content": words(50, seed)})
    if not m.get("tool_calls"):
        msgs.append({"role": "user", "content": "continue " + words(8, seed)})


async def compaction_agent(s, aid):
    """Anonymous agent with tools; compacts every 10 calls (summary call, then new conversation quoting it)."""
    task = 0
    while time.time() < DEADLINE:
        task += 1
        system = {"role": "system", "content": "You are a coding agent. " + words(150, aid)}
        msgs = [system, {"role": "user", "content": f"Task {aid}.{task}: " + words(30, aid * 100 + task)}]
        extra = {"tools": TOOLS, "vllm_xargs": {"saga_sim_tool_turns": 1000}}
        sid_before = None
        for i in range(30):
            if time.time() > DEADLINE:
                return
            compacted = False
            if i and i % 10 == 0:
                ask = msgs + [{"role": "user", "content": "Summarize the work so far for a handoff."}]
                st, j, sid = await call(
                    s, "compact", {"model": "saga-sim", "messages": ask, "max_tokens": 80, "ignore_eos": True}
                )
                if st != 200 or not j:
                    break
                summary = j["choices"][0]["message"]["content"] or ""
                msgs = [
                    system,
                    {
                        "role": "user",
                        "content": "Another model worked on this task; its summary:\n"
                        + summary
                        + "\nGo on from there.",
                    },
                ]
                compacted = True
            st, j, sid = await call(
                s, "agent", {"model": "saga-sim", "messages": msgs, "max_tokens": 24, **extra}
            )
            if st != 200 or not j:
                break
            sess_ids["agent"].add(sid)
            if compacted:
                compaction_keep["same" if sid == sid_before else "changed"] += 1
            sid_before = sid
            append_answer(msgs, j, aid * 1000 + i)
            await asyncio.sleep(random.uniform(0.1, 0.6))


async def cache_key_app(s, app, conv, key):
    """Several conversations of one app sharing a prompt_cache_key."""
    n = 0
    while time.time() < DEADLINE:
        n += 1
        msgs = [
            {"role": "system", "content": "Helpful app. " + words(60, 7)},
            {"role": "user", "content": f"conv {app}.{conv}.{n}: " + words(40, app * 10000 + conv * 100 + n)},
        ]
        for t in range(6):
            if time.time() > DEADLINE:
                return
            st, j, sid = await call(
                s,
                "cachekey",
                {"model": "saga-sim", "messages": msgs, "max_tokens": 24, "prompt_cache_key": key},
            )
            if st != 200 or not j:
                break
            sess_ids["cachekey"].add(sid)
            append_answer(msgs, j, n * 10 + t)
            await asyncio.sleep(random.uniform(0.2, 1.0))


async def named_parallel(s, aid):
    """Agent naming X-Session-ID issuing 2-4 calls at once."""
    task = 0
    while time.time() < DEADLINE:
        task += 1
        hdr = {"X-Session-ID": f"named-{aid}-{task}"}
        msgs = [
            {"role": "system", "content": "Parallel agent. " + words(120, aid)},
            {"role": "user", "content": f"job {aid}.{task} " + words(40, aid + task)},
        ]
        for t in range(8):
            if time.time() > DEADLINE:
                return
            k = random.randint(2, 4)
            res = await asyncio.gather(
                *[
                    call(
                        s,
                        "named",
                        {
                            "model": "saga-sim",
                            "messages": msgs
                            + [{"role": "user", "content": f"subtask {q} " + words(20, q + t)}],
                            "max_tokens": 32,
                        },
                        hdr,
                    )
                    for q in range(k)
                ]
            )
            ok = [r for r in res if r[0] == 200 and r[1]]
            if not ok:
                break
            for r in ok:
                if r[2] != hdr["X-Session-ID"]:
                    errors.append((round(time.time() - T0), "named", "sid-mismatch", r[2]))
            append_answer(msgs, ok[0][1], t)
            await asyncio.sleep(random.uniform(0.2, 0.8))


async def streamer(s, sid):
    rnd = random.Random(sid)
    while time.time() < DEADLINE:
        cut = rnd.random() < 0.4
        body = {
            "model": "saga-sim",
            "messages": [
                {"role": "user", "content": "stream " + words(rnd.randint(20, 300), rnd.randrange(10**6))}
            ],
            "max_tokens": rnd.choice([16, 64, 200]),
            "stream": True,
            "ignore_eos": True,
        }
        hdr = {"X-Session-ID": f"stream-{sid}-{rnd.randrange(50)}"} if rnd.random() < 0.5 else {}
        t0 = time.time()
        kind = "stream_cut" if cut else "stream"
        try:
            async with s.post(
                URL + "/v1/chat/completions",
                json=body,
                headers=hdr,
                timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT),
            ) as r:
                if r.status != 200:
                    stats[(kind, r.status)] += 1
                    errors.append((round(time.time() - T0), kind, r.status, (await r.text())[:300]))
                    continue
                chunks, done = 0, False
                async for line in r.content:
                    if line.startswith(b"data: [DONE]"):
                        done = True
                    if line.startswith(b"data:"):
                        chunks += 1
                    if cut and chunks >= rnd.randint(2, 6):
                        r.close()  # drop the connection mid-stream
                        break
                if cut:
                    stats[(kind, "cut")] += 1
                elif done:
                    stats[(kind, 200)] += 1
                else:
                    stats[(kind, "no-DONE")] += 1
                    errors.append((round(time.time() - T0), kind, "no-DONE", chunks))
        except asyncio.TimeoutError:
            stats[(kind, "timeout")] += 1
            hung.append((round(t0 - T0), kind, round(time.time() - t0)))
        except Exception as e:
            stats[(kind, type(e).__name__)] += 1
            errors.append((round(time.time() - T0), kind, type(e).__name__, str(e)[:200]))
        await asyncio.sleep(rnd.uniform(0.1, 0.8))


async def one_shot(s):
    i = 0
    while time.time() < DEADLINE:
        i += 1
        await call(
            s,
            "oneshot",
            {
                "model": "saga-sim",
                "messages": [{"role": "user", "content": f"one {i} " + words(30, i)}],
                "max_tokens": 8,
            },
        )
        await asyncio.sleep(1.0)


BAD = [
    ("malformed", b'{"model": "saga-sim", "messages": [', {}),
    ("notjson", b"hello", {}),
    ("messages-not-list", json.dumps({"model": "saga-sim", "messages": "x"}).encode(), {}),
    ("no-messages", json.dumps({"model": "saga-sim"}).encode(), {}),
    (
        "bad-max-tokens",
        json.dumps(
            {"model": "saga-sim", "messages": [{"role": "user", "content": "x"}], "max_tokens": "abc"}
        ).encode(),
        {},
    ),
    (
        "huge-sid",
        json.dumps(
            {"model": "saga-sim", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
        ).encode(),
        {"X-Session-ID": "s" * 7000},
    ),
    (
        "huge-cache-key",
        json.dumps(
            {
                "model": "saga-sim",
                "messages": [{"role": "user", "content": "x"}],
                "max_tokens": 2,
                "prompt_cache_key": "k" * 100000,
            }
        ).encode(),
        {},
    ),
    ("array-body", b"[1,2,3]", {}),
    (
        "null-content",
        json.dumps(
            {"model": "saga-sim", "messages": [{"role": "user", "content": None, "x": 1}, 5], "max_tokens": 2}
        ).encode(),
        {},
    ),
    (
        "neg-max-tokens",
        json.dumps(
            {"model": "saga-sim", "messages": [{"role": "user", "content": "x"}], "max_tokens": -5}
        ).encode(),
        {},
    ),
]
bad_results = collections.defaultdict(collections.Counter)


async def bad_client(s):
    i = 0
    while time.time() < DEADLINE:
        name, raw, hdr = BAD[i % len(BAD)]
        i += 1
        try:
            async with s.post(
                URL + "/v1/chat/completions",
                data=raw,
                headers={"Content-Type": "application/json", **hdr},
                timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT),
            ) as r:
                body = await r.text()
                bad_results[name][r.status] += 1
                stats[("bad", r.status)] += 1
                if not (400 <= r.status < 500):
                    errors.append((round(time.time() - T0), "bad:" + name, r.status, body[:200]))
        except asyncio.TimeoutError:
            bad_results[name]["timeout"] += 1
            hung.append((round(time.time() - T0), "bad:" + name, CALL_TIMEOUT))
        except Exception as e:
            bad_results[name][type(e).__name__] += 1
        await asyncio.sleep(2.0)


def children(pid):
    try:
        return [int(x) for x in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except Exception:
        return []


def rss_kb(pid):
    try:
        for l in open(f"/proc/{pid}/status"):
            if l.startswith("VmRSS"):
                return int(l.split()[1])
    except Exception:
        return None


async def sample(s, serve_pid, label=""):
    st = {}
    try:
        async with s.get(URL + "/saga/v1/state", timeout=aiohttp.ClientTimeout(total=10)) as r:
            st = await r.json()
    except Exception as e:
        st = {"error": repr(e)}
    try:
        async with s.get(URL + "/saga/v1/sessions", timeout=aiohttp.ClientTimeout(total=10)) as r:
            ss = await r.json()
        nsess = (
            len(ss) if isinstance(ss, list) else len(ss.get("sessions", ss)) if isinstance(ss, dict) else None
        )
    except Exception as e:
        nsess = repr(e)
    kids = children(serve_pid)
    rec = {
        "t": round(time.time() - T0),
        "label": label,
        "rss_kb": {k: rss_kb(k) for k in kids},
        "serve_rss": rss_kb(serve_pid),
        "in_flight": st.get("in_flight"),
        "queued": st.get("queued"),
        "sessions": st.get("sessions"),
        "sessions_list": nsess,
        "admission": {k: v for k, v in (st.get("admission") or {}).items() if k != "reserved_tokens"},
        "reserved": (st.get("admission") or {}).get("reserved_tokens"),
        "rep_in_flight": [r.get("in_flight") for r in st.get("replicas", [])],
        "rep_reserved": [r.get("reserved_tokens") for r in st.get("replicas", [])],
        "slowness": [r.get("slowness") for r in st.get("replicas", [])],
        "spills": st.get("spills"),
        "moves": st.get("moves"),
        "cache_keys": st.get("cache_keys"),
        "quoted": st.get("quoted_answers"),
        "workers_missing": st.get("workers_missing"),
        "status": {f"{k[0]}:{k[1]}": v for k, v in sorted(stats.items(), key=str)},
        "hung": len(hung),
        "errors": len(errors),
    }
    with open(OUT + SAMPLES, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(
        json.dumps(
            {
                k: rec[k]
                for k in (
                    "t",
                    "label",
                    "rss_kb",
                    "in_flight",
                    "sessions",
                    "sessions_list",
                    "spills",
                    "hung",
                    "errors",
                    "rep_in_flight",
                    "slowness",
                )
            }
        ),
        flush=True,
    )
    return rec


async def sampler(s, serve_pid):
    while time.time() < DEADLINE:
        await sample(s, serve_pid)
        await asyncio.sleep(30)


async def main():
    global T0, DEADLINE
    os.makedirs(LOG, exist_ok=True)
    open(OUT + SAMPLES, "w").close()
    start(
        [
            "sim",
            "--replicas",
            "2",
            "--base-port",
            str(SIM),
            "--profile",
            "tiny-cpu",
            "--time-scale",
            "20",
            "--num-gpu-blocks-override",
            BLOCKS,
        ],
        "sim-fast.log",
    )
    start(
        [
            "sim",
            "--replicas",
            "1",
            "--base-port",
            str(SIM + 2),
            "--profile",
            "tiny-cpu",
            "--time-scale",
            "8",
            "--num-gpu-blocks-override",
            BLOCKS,
        ],
        "sim-slow.log",
    )
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=300)) as s:
        for i in range(3):
            await wait_up(s, f"http://127.0.0.1:{SIM + i}/health")
        serve = start(
            [
                "serve",
                "--port",
                str(PORT),
                "--workers",
                "2",
                "--no-access-log",
                "--session-idle-ttl-s",
                "180",
                *sum([["--replica", f"http://127.0.0.1:{SIM + i}"] for i in range(3)], []),
            ],
            "proxy.log",
        )
        await wait_up(s, URL + "/health")
        await asyncio.sleep(2)
        T0 = time.time()
        DEADLINE = T0 + DUR
        say(f"start {time.ctime()} dur {DUR}s serve pid {serve.pid} workers {children(serve.pid)}")
        tasks = [compaction_agent(s, a) for a in range(8)]
        tasks += [cache_key_app(s, app, c, f"user-{app}") for app in range(2) for c in range(3)]
        tasks += [named_parallel(s, a) for a in range(3)]
        tasks += [streamer(s, i) for i in range(3)]
        tasks += [one_shot(s), bad_client(s), sampler(s, serve.pid)]
        await asyncio.gather(*tasks)
        say(f"load stopped at t={round(time.time() - T0)}")
        await asyncio.sleep(10)
        end = await sample(s, serve.pid, "end+10s")
        say("END+10s: " + json.dumps(end))
        async with s.get(URL + "/metrics") as r:
            open(OUT + "/metrics-end.txt", "w").write(await r.text())
        async with s.get(URL + "/saga/v1/replicas") as r:
            open(OUT + "/replicas-end.json", "w").write(await r.text())
        async with s.get(URL + "/saga/v1/sessions") as r:
            open(OUT + "/sessions-end.json", "w").write(await r.text())
        say("status counts: " + json.dumps({f"{k[0]}:{k[1]}": v for k, v in sorted(stats.items(), key=str)}))
        say("bad requests: " + json.dumps({k: dict(v) for k, v in bad_results.items()}, default=str))
        say(f"hung ({len(hung)}): {hung[:30]}")
        say(f"errors ({len(errors)}): " + "\n  ".join(map(str, errors[:60])))
        say(
            f"compaction: session kept {dict(compaction_keep)}; agent sids {len(sess_ids['agent'])} cachekey sids {len(sess_ids['cachekey'])}"
        )
        # watch the sessions drain past the idle TTL (short)
        for w in [30 * k for k in range(1, TAILN + 1)]:
            await asyncio.sleep(30)
            r2 = await sample(s, serve.pid, f"end+{10 + w}s")
        say("final: " + json.dumps(r2))
        say(f"serve alive: {serve.poll() is None}; workers {children(serve.pid)}")
    open(OUT + SOUT, "w").write("\n".join(out_lines) + "\n")


try:
    asyncio.run(main())
finally:
    stop_all()
    open(OUT + SOUT, "a").write("\n".join(out_lines[-3:]) + "\n(stopped)\n")
