# ruff: noqa
"""Client hangs up mid-stream on ROUTE: the upstream connection must be closed (abort) soon, in_flight 0."""

import os
from pathlib import Path

import asyncio, json, time, sys

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *
from midstream import ROUTES


def check(route, port, fport):
    events, req = ROUTES[route]
    events = events[:2] + [events[-1]] * 40

    def handler(m, p, h, b):
        r = basic_routes(m, p, h, b)
        if r:
            return r
        return stream(events, delay=0.25)

    async def main():
        fake = Fake(fport, handler)
        await fake.start()
        px = Proxy(port, [f"http://127.0.0.1:{fport}"])
        try:
            await px.wait_ready()
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(post(route, json.dumps(req), [("X-Session-ID", "dc-1")]))
            await w.drain()
            await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
            got = b""
            while got.count(b"\n\n") < 3:
                got += await asyncio.wait_for(r.read(4096), 5)
            n_before = len(fake.closed_conns)
            t_close = time.time()
            w.transport.abort()
            t_up = None
            for _ in range(60):
                await asyncio.sleep(0.1)
                cl = [c for c in fake.closed_conns[n_before:] if c[1] == route]
                if cl:
                    t_up = cl[0][0] - t_close
                    kind = cl[0][2]
                    break
            await asyncio.sleep(0.3)
            inf = await in_flight(port)
            m = await metrics(port)
            dis = [l for l in m.splitlines() if l.startswith("saga_client_disconnects_total")]
            problems = []
            if t_up is None:
                problems.append("upstream connection still open 6s after client hung up (not aborted)")
            if inf[0] != 0 or any(inf[1]):
                problems.append(f"in_flight {inf}")
            if problems:
                return f"DEFECT: {route} client disconnect mid-stream: " + "; ".join(problems)
            return f"OK: {route} client disconnect mid-stream -> upstream conn closed after {t_up:.2f}s, in_flight {inf}, {dis}"
        finally:
            px.stop()
            await fake.stop()

    run(main)
