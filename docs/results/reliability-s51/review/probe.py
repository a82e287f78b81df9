# ruff: noqa
import asyncio, json, sys

sys.path.insert(0, "/tmp/rev51")
from h import *


async def main():
    tree = "/tmp/snap51"
    sp, reps = start_sims(tree, 24000, 2)
    pp, url = start_proxy(tree, 24010, reps)
    try:
        async with aiohttp.ClientSession() as s:
            await wait_ready(s, url, 2)
            st = await get(s, url, "/saga/v1/state")
            print(json.dumps(st, indent=1)[:3000])
    finally:
        stop_all()


asyncio.run(main())
