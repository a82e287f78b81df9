# ruff: noqa
import os

os.makedirs("/tmp/saga-review45c", exist_ok=True)
# Item 1: the owner worker killed mid relay: relayed clients must see their answer end promptly, with an error event.
import sys, json, asyncio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *

fake = start_fake(27113)
saga = start_saga(27013, 27113, ["--workers", "2"])


async def one(rid):
    r, w = await asyncio.open_connection("127.0.0.1", 27013)
    pid = server_pid(27013, w.get_extra_info("sockname")[1])
    w.write(f"GET /v1/responses/{rid}?stream=true HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await w.drain()
    await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 8)
    await r.readuntil(b"\n\n")
    return r, w, pid


async def main(rid, owner):
    conns = await asyncio.gather(*(one(rid) for _ in range(12)))
    await asyncio.sleep(1)
    os.kill(owner, signal.SIGKILL)
    t0 = time.monotonic()
    out = []
    for r, w, pid in conns:
        if pid == owner:
            continue
        got = b""
        try:
            while not got.endswith(b"0\r\n\r\n"):
                c = await asyncio.wait_for(r.read(4096), 10)
                if not c:
                    break
                got += c
            out.append((round(time.monotonic() - t0, 2), b'"error"' in got, got[-120:]))
        except asyncio.TimeoutError:
            out.append((None, False, got[-120:]))
        w.close()
    return out


try:
    st, hs, body, owner = req_pid(27013, "POST", "/v1/responses", {"model": "fake", "input": "mode_mslow"})
    out = asyncio.run(main(json.loads(body)["id"], owner))
finally:
    stop(saga)
    fake.terminate()
    fake.wait()
hung = [o for o in out if o[0] is None or o[0] > 5]
noerr = [o for o in out if o[0] is not None and not o[1]]
if not out:
    print("DEFECT?: no relayed stream seen")
elif hung or noerr:
    print(
        f"DEFECT: owner killed: {len(hung)} of {len(out)} relayed streams hung >5 s, {len(noerr)} ended with no error event; e.g. {(hung or noerr)[0]}"
    )
else:
    print(
        f"OK: owner killed mid relay: all {len(out)} relayed streams ended within {max(o[0] for o in out)} s with an error event and the last chunk"
    )
