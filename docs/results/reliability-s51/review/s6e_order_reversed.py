# ruff: noqa
# S6e: S6d with the configurations run in reverse order (nospill, s55, s51) each round. S6d: as S6 with the fan-out calls naming a large max_tokens (argv[4]) their answers do not reach. S6: fan-outs of parallel calls sharing one long session prefix, on a fleet where the engine holds them all
# (prefix shared), short answers: spill vs before (snap55) vs spill:false, alternating, same sims each round.
import asyncio, json, sys, statistics, time

sys.path.insert(0, "/tmp/rev51")
from h import *

TS = float(sys.argv[3]) if len(sys.argv) > 3 else 20.0
BLOCKS = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
CTX_WORDS = int(sys.argv[2]) if len(sys.argv) > 2 else 4000
FAN = 8
FAN_MT = int(sys.argv[4]) if len(sys.argv) > 4 else 48


async def session_task(s, url, k, tag):
    sysm = {"role": "system", "content": f"Agent {tag}-{k}. " + words(CTX_WORDS, 1000 + k)}
    u = {"role": "user", "content": "task " + words(30, 2000 + k)}
    hdr = {"X-Session-ID": f"{tag}-fan-{k}"}
    st, txt, dt, h = await chat(s, url, [sysm, u], headers=hdr, max_tokens=32)
    usage = json.loads(txt).get("usage", {}) if st == 200 else {}
    t = time.time()
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
                max_tokens=FAN_MT,
            )
            for i in range(FAN)
        ]
    )
    fan_s = (time.time() - t) * TS
    n_other = sum(1 for r in rs if r[3].get("X-Saga-Replica") != h.get("X-Saga-Replica"))
    ok = all(r[0] == 200 for r in rs)
    return fan_s, n_other, ok, usage.get("prompt_tokens")


async def one(tree, label, extra, sims, port, tag):
    pp, url = start_proxy(tree, port, sims, extra)
    try:
        async with aiohttp.ClientSession() as s:
            await wait_ready(s, url, 2)
            out = []
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
        "/tmp/snap51", 24440, 2, profile="llama3-8b-h100", blocks=BLOCKS, extra=["--time-scale", str(TS)]
    )
    res = {"s51": [], "s55": [], "s51-nospill": []}
    spills = {"s51": [], "s55": [], "s51-nospill": []}
    port = 24450
    try:
        for rnd in range(3):
            for label, tree, extra in list(
                reversed(
                    [
                        ("s51", "/tmp/snap51", ()),
                        ("s55", "/tmp/snap55", ()),
                        ("s51-nospill", "/tmp/snap51", ("--config", "/tmp/rev51/nospill.yaml")),
                    ]
                )
            ):
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
        f"{verdict}: fan_max_tokens={FAN_MT} ts={TS} blocks={BLOCKS} ctx_prompt_tokens={pt} fan={FAN} mean fan-out time (sim s) {mean}; calls off bound per fan-out {other}; spills {spills}; all200 {okk}"
    )


asyncio.run(main())
