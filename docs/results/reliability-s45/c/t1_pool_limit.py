# ruff: noqa
import os

os.makedirs("/tmp/saga-review45c", exist_ok=True)
# Item 1: more than 100 relayed resumed streams at once: does each get its answer as it comes?
import sys, json, asyncio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *

fake = start_fake(27112)
saga = start_saga(27012, 27112, ["--workers", "2"])
N = 260


async def one(rid):
    t0 = time.monotonic()
    r, w = await asyncio.open_connection("127.0.0.1", 27012)
    w.write(f"GET /v1/responses/{rid}?stream=true HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await w.drain()
    try:
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 8)
        await asyncio.wait_for(r.readuntil(b"\n\n"), 8)
        ok = time.monotonic() - t0
    except (asyncio.TimeoutError, asyncio.IncompleteReadError):
        head, ok = b"", None
    await asyncio.sleep(max(0, 9 - (time.monotonic() - t0)))
    w.transport.abort()
    return ok


MET = []


async def metrics():
    await asyncio.sleep(3)
    for _ in range(6):
        t0 = time.monotonic()
        r, w = await asyncio.open_connection("127.0.0.1", 27012)
        w.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await w.drain()
        data = await asyncio.wait_for(r.read(), 10)
        w.close()
        MET.append(round(time.monotonic() - t0, 2))


async def main(rid):
    res = await asyncio.gather(*(one(rid) for _ in range(N)), metrics())
    return res[:-1]


try:
    rid = json.loads(req(27012, "POST", "/v1/responses", {"model": "fake", "input": "mode_mslow"})[2])["id"]
    res = asyncio.run(main(rid))
    s = json.loads(req(27112, "GET", "/stats")[2])
finally:
    stop(saga)
    fake.terminate()
    fake.wait()
late = [x for x in res if x is None]
if late:
    print(
        f"DEFECT: of {N} concurrent resumed streams, {len(late)} got no first event within 8 s (replica saw at most {s['max_active']} at once): relays capped; meanwhile /metrics took {sorted(MET)} s"
    )
else:
    print(
        f"OK: {N} concurrent resumed streams all got their first event within 8 s (replica max concurrent {s['max_active']}); /metrics took {sorted(MET)} s"
    )
