# ruff: noqa
"""Client API keys (two tenants) and --workers N. Both tenants use prompt_cache_key "shared" (and a 256-char
key). Tenant A's conversation A1 holds a long call; meanwhile B sends (1) its own conversation, (2) A1's exact
first user message; A sends A2 (another conversation). Then every session listed with its tenant.
Expected: B never in A's sessions; A2 split; the split id (<=256 chars) usable as X-Session-ID."""

import asyncio, os, sys, json, aiohttp

sys.path.insert(0, "/tmp/reviewK")
os.environ["SAGA_API_KEYS"] = json.dumps({"sk-a": "team-a", "sk-b": "team-b"})
from harness import stack, get


async def post(http, url, who, key, first, mt=5, hdr=None):
    body = {
        "model": "saga-sim",
        "max_tokens": mt,
        "prompt_cache_key": key,
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": first}],
    }
    h = {"Authorization": f"Bearer sk-{who}", **(hdr or {})}
    async with http.post(url + "/v1/chat/completions", json=body, headers=h) as r:
        await r.read()
        return r.status, r.headers.get("X-Session-ID"), r.headers.get("X-Saga-Replica", "")[-5:]


async def main(url):
    async with aiohttp.ClientSession() as http:
        for key in ("shared", "K" * 256):
            a1 = asyncio.create_task(post(http, url, "a", key, "A1 task", mt=400))
            await asyncio.sleep(0.3)
            res = {}
            res["B own conv"] = await post(http, url, "b", key, "B task")
            b_own = asyncio.create_task(post(http, url, "b", key, "B task", mt=400))
            await asyncio.sleep(0.3)
            res["B same text as A1"] = await post(http, url, "b", key, "A1 task")
            res["A2 (other conv of A)"] = await post(http, url, "a", key, "A2 task")
            res["A1 side call"] = await post(http, url, "a", key, "A1 task")
            sid = res["A2 (other conv of A)"][1]
            res["A2 id sent back as header"] = await post(
                http, url, "a", key, "A2 task", hdr={"X-Session-ID": sid}
            )
            res["B sends A2 id as header"] = await post(
                http, url, "b", key, "A2 task", hdr={"X-Session-ID": sid}
            )
            res["A1 end"] = await a1
            await b_own
            for k, v in res.items():
                print(
                    f"key[{len(key)}] {k:26s} status {v[0]} session {v[1] if len(v[1] or '') < 40 else v[1][:8] + '..' + v[1][-20:]} (len {len(v[1] or '')})"
                )
    s = get(url + "/saga/v1/sessions?limit=1000")
    rows = sorted(
        (
            x.get("tenant") or x.get("tenant_id"),
            (x.get("session_id") or x.get("id"))[:8] + ".." + (x.get("session_id") or x.get("id"))[-20:],
        )
        for x in s["sessions"]
    )
    for r in rows:
        print("listed", r)
    st = get(url + "/saga/v1/state")
    print("in_flight", st["in_flight"], "cache_keys", st.get("cache_keys"))


tree, port, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with stack(
    tree, port - 10, port, workers=workers, sim_args=("--profile", "llama3-8b-h100", "--model", "saga-sim")
) as url:
    asyncio.run(main(url))
