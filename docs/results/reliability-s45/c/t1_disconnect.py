# ruff: noqa
import os

os.makedirs("/tmp/saga-review45c", exist_ok=True)
# Item 1: clients that disconnect mid relayed stream: is the replica's stream aborted, are fds leaked?
import sys, json, asyncio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *

fake = start_fake(27111)
saga = start_saga(27011, 27111, ["--workers", "2"])


def stats():
    return json.loads(req(27111, "GET", "/stats")[2])


async def one(rid, hold):
    r, w = await asyncio.open_connection("127.0.0.1", 27011)
    w.write(f"GET /v1/responses/{rid}?stream=true HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await w.drain()
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
    await asyncio.wait_for(r.read(200), 10)
    await asyncio.sleep(hold)
    w.transport.abort()
    return True


async def main(rid):
    rel = await asyncio.gather(*(one(rid, 0.3) for _ in range(40)))
    return sum(rel)


try:
    st, hs, body = req(27011, "POST", "/v1/responses", {"model": "fake", "input": "mode_mslow"})
    rid = json.loads(body)["id"]
    workers = children(saga.pid)
    req(27011, "GET", "/health")
    time.sleep(0.5)
    before = {w: fds(w) for w in workers}
    n_rel = asyncio.run(main(rid))
    time.sleep(3)
    s = stats()
    after = {w: fds(w) for w in workers}
finally:
    stop(saga)
    fake.terminate()
    fake.wait()
grew = {w: after[w] - before[w] for w in workers}
if s["active_streams"] > 0 or max(grew.values()) > 10:
    print(
        f"DEFECT: 40 clients (about half relayed) cut mid-stream; 3 s later the replica still has {s['active_streams']} streams open (aborted {s['aborted_streams']}), worker fd growth {grew}"
    )
else:
    print(
        f"OK: 40 clients cut mid-stream: replica streams all aborted ({s['aborted_streams']}), worker fd growth {grew}"
    )
