# ruff: noqa
"""Memory: N distinct 256-char prompt_cache_keys (one call each), then N calls under ONE key with N distinct
first user messages while the key's own call is in flight (N sub-sessions). Prints proxy RSS (MB) and
/saga/v1/state sessions after each phase and after 5 s idle."""

import asyncio, sys, os, subprocess, time, aiohttp

sys.path.insert(0, "/tmp/reviewK")
from harness import stack, get


def rss(port):
    pid = subprocess.run(
        ["bash", "-c", f"ss -ltnp 'sport = :{port}' | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return int(open(f"/proc/{pid}/status").read().split("VmRSS:")[1].split()[0]) // 1024


async def post(http, url, key, first, mt=1):
    body = {
        "model": "saga-sim",
        "max_tokens": mt,
        "prompt_cache_key": key,
        "messages": [{"role": "user", "content": first}],
    }
    async with http.post(url + "/v1/chat/completions", json=body) as r:
        await r.read()
        return r.status


async def main(url, port, n):
    print("start rss", rss(port), "MB")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:
        sem = asyncio.Semaphore(64)

        async def one(k, f):
            async with sem:
                return await post(http, url, k, f)

        t0 = time.time()
        st = await asyncio.gather(*(one(f"{i:08d}" + "k" * 248, "hello") for i in range(n)))
        print(
            f"phase1 {n} keys: non-200 {sum(s != 200 for s in st)} {time.time() - t0:.0f}s rss {rss(port)} MB sessions {get(url + '/saga/v1/state')['sessions']}"
        )
        own = asyncio.create_task(post(http, url, "one-key", "own", mt=2000))
        await asyncio.sleep(0.3)
        st = await asyncio.gather(*(one("one-key", f"conversation {i}") for i in range(n)))
        print(
            f"phase2 {n} subs: non-200 {sum(s != 200 for s in st)} rss {rss(port)} MB sessions {get(url + '/saga/v1/state')['sessions']} own {await own}"
        )
    await asyncio.sleep(5)
    s = get(url + "/saga/v1/state")
    print(
        f"idle rss {rss(port)} MB sessions {s['sessions']} in_flight {s['in_flight']} cache_keys {s.get('cache_keys')}"
    )


tree, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with stack(
    tree,
    port - 10,
    port,
    sim_args=("--profile", "llama3-8b-h100", "--model", "saga-sim", "--time-scale", "50"),
) as url:
    asyncio.run(main(url, port, n))
