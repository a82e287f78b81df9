# ruff: noqa
# S6b: as S6, also sampling each sim's vllm:kv_cache_usage_perc during the fan-outs (the max seen per replica).
# S6: fan-outs of parallel calls sharing one long session prefix, on a fleet where the engine holds them all
# (prefix shared), short answers: spill vs before (snap55) vs spill:false, alternating, same sims each round.
import asyncio, json, sys, statistics, time

sys.path.insert(0, "/tmp/rev51")
from h import *

TS = float(sys.argv[3]) if len(sys.argv) > 3 else 20.0
BLOCKS = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
CTX_WORDS = int(sys.argv[2]) if len(sys.argv) > 2 else 4000
FAN = 8
SIMS = []
PEAKS = []


async def session_task(s, url, k, tag):
    sysm = {"role": "system", "content": f"Agent {tag}-{k}. " + words(CTX_WORDS, 1000 + k)}
    u = {"role": "user", "content": "task " + words(30, 2000 + k)}
    hdr = {"X-Session-ID": f"{tag}-fan-{k}"}
    st, txt, dt, h = await chat(s, url, [sysm, u], headers=hdr, max_tokens=32)
    usage = json.loads(txt).get("usage", {}) if st == 200 else {}
    t = time.time()
    stop_ev = asyncio.Event()
    peaks = {}

    async def sampler():
        while not stop_ev.is_set():
            for u in SIMS:
                try:
                    async with s.get(u + "/metrics") as r:
                        for line in (await r.text()).splitlines():
                            if line.startswith("vllm:kv_cache_usage_perc"):
                                peaks[u[-1]] = max(peaks.get(u[-1], 0.0), float(line.split()[-1]))
                except Exception:
                    pass
            await asyncio.sleep(0.01)

    smp = asyncio.create_task(sampler())
    rs = await asyncio.gather(
        *[
            chat(
                s,
                url,
                [
                    sysm,
                    u,
                    {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": f"sub {i} " + words(40, 3000 + 10 * k + i)},
                ],
                headers=hdr,
                max_tokens=48,
            )
            for i in range(FAN)
        ]
    )
    fan_s = (time.time() - t) * TS
    stop_ev.set()
    await smp
    PEAKS.append((h.get("X-Saga-Replica")[-1], {k: round(v, 2) for k, v in sorted(peaks.items())}))
    n_other = sum(1 for r in rs if r[3].get("X-Saga-Replica") != h.get("X-Saga-Replica"))
    ok = all(r[0] == 200 for r in rs)
    return fan_s, n_other, ok, usage.get("prompt_tokens")


async def one(tree, label, extra, sims, port, tag):
    pp, url = start_proxy(tree, port, sims, extra)
    try:
        async with aiohttp.ClientSession() as s:
            await wait_ready(s, url, 2)
            out = []
            PEAKS.append(label)
            for k in range(4):  # 4 sessions, one after the other (each alone on the fleet)
                out.append(await session_task(s, url, k, tag))
            st = await get(s, url, "/saga/v1/state")
    finally:
        stop(pp)
    return out, st.get("spills")


async def main():
    import yaml  # noqa

    open("/tmp/rev51/nospill.yaml", "w").write("policy: {preset: saga, stealing: {spill: false}}\n")
    sp, sims = start_sims(
        "/tmp/snap51", 24450, 2, profile="llama3-8b-h100", blocks=BLOCKS, extra=["--time-scale", str(TS)]
    )
    SIMS.extend(sims)
    res = {"s51": [], "s55": [], "s51-nospill": []}
    spills = {"s51": [], "s55": [], "s51-nospill": []}
    port = 24460
    try:
        for rnd in range(2):
            for label, tree, extra in [
                ("s51", "/tmp/snap51", ()),
                ("s55", "/tmp/snap55", ()),
                ("s51-nospill", "/tmp/snap51", ("--config", "/tmp/rev51/nospill.yaml")),
            ]:
                out, sp_ = await one(tree, label, extra, sims, port, f"{label}-r{rnd}")
                port += 1
                res[label] += out
                spills[label].append(sp_)
    finally:
        stop_all()
    mean = {k: round(statistics.mean(x[0] for x in v), 2) for k, v in res.items()}
    other = {k: [x[1] for x in v] for k, v in res.items()}
    okk = {k: all(x[2] for x in v) for k, v in res.items()}
    pt = res["s51"][0][3]
    verdict = "DEFECT" if mean["s51"] > 1.1 * mean["s55"] else "OK"
    print(
        f"{verdict}: ts={TS} blocks={BLOCKS} ctx_prompt_tokens={pt} fan={FAN} mean fan-out time (sim s) {mean}; calls off bound per fan-out {other}; spills {spills}; all200 {okk}; (bound, peak KV usage per replica) per fan-out {PEAKS}"
    )


asyncio.run(main())
