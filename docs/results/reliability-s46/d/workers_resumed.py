# ruff: noqa
# ruff: noqa
"""Item 2: `GET /v1/responses/{id}?stream=true` with --workers 2 reaching the worker that did not serve the
response (relayed from the owner worker, `_relayed_from_owner`): normal streams arrive complete and event by
event (LF, CRLF, last event without a blank line, an event split across writes, an event over 256 KiB, a whole
JSON answer); a replica failing mid-stream ends with exactly one numbered error event; the owner worker
SIGKILLed mid-stream ends the stream with the numbered error event, promptly."""

import asyncio, json, os, signal, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wcommon import *

PPORT, RPORT = 30461, 30462
SENT = {}  # scenario -> list of (send time offset, bytes)

BIG = ev(1, extra={"delta": "y" * (300 * 1024)})


def script(name):
    if name == "normal":
        parts = [(0.5 * i, ev(i)) for i in range(4)] + [(2.0, ev(4, "response.completed").rstrip(b"\n"))]
    elif name == "crlf":
        parts = [(0.5 * i, ev(i, eol=b"\r\n")) for i in range(4)] + [
            (2.0, ev(4, "response.completed", eol=b"\r\n").rstrip(b"\r\n"))
        ]
    elif name == "split":
        e = ev(1)
        parts = [(0.0, ev(0)), (0.3, e[:20]), (0.8, e[20:]), (1.3, ev(2))]
    elif name == "big":
        parts = [(0.0, ev(0)), (0.3, BIG), (1.8, ev(2))]
    elif name == "dies":
        parts = [(0.0, ev(5) + ev(6)), (0.3, "abort")]
    elif name == "kill":
        parts = [(0.4 * i, ev(i)) for i in range(40)]
    return parts


async def handler(m, path, hd, body):
    if m == "POST" and path == "/v1/responses":
        rid = json.loads(body)["input"]
        b = json.dumps({"id": rid, "object": "response", "status": "completed", "output": []}).encode()
        yield (
            "w",
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunk(b[:10]),
        )
        await asyncio.sleep(0.5)  # (the client finds the worker that serves it while the answer is open)
        yield ("w", chunk(b[10:]) + b"0\r\n\r\n")
        return
    if m == "GET" and path.startswith("/v1/responses/resp_json"):
        b = json.dumps({"id": "resp_json", "object": "response", "output": [{"text": "z" * 100000}]}).encode()
        yield (
            "w",
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunk(b[:50000]),
        )
        await asyncio.sleep(0.5)
        yield ("w", chunk(b[50000:]) + b"0\r\n\r\n")
        return
    if m == "GET" and path.startswith("/v1/responses/resp_") and "stream=true" in path:
        name = path.split("resp_")[1].split("?")[0]
        yield ("w", STREAM_HEAD)
        t0 = time.monotonic()
        for at, b in script(name):
            await asyncio.sleep(max(0, at - (time.monotonic() - t0)))
            if b == "abort":
                yield ("abort",)
                return
            yield ("w", chunk(b))
        yield ("w", b"0\r\n\r\n")
        return
    yield ("w", json_answer({}))


def check_normal(name, res):
    sent = [b for _, b in script(name)]
    whole = b"".join(c for _, c in res["chunks"])
    evs, rest = event_times(res["chunks"])
    problems = []
    if whole != b"".join(sent):
        problems.append(f"bytes differ (got {len(whole)}, sent {sum(map(len, sent))})")
    # each event should arrive shortly after the replica sent it (not held to the end)
    sched = script(name)
    late = []
    if name in ("normal", "crlf"):
        for i, (t, e) in enumerate(evs):
            due = sched[i][0]
            if t > due + 0.45:
                late.append((i, round(t, 2), due))
        if rest and res["chunks"][-1][0] > sched[-1][0] + 0.45:
            late.append(("last", round(res["chunks"][-1][0], 2), sched[-1][0]))
    if name == "split":
        # the whole event 1 is due at 0.8; event 0 at 0
        if evs and evs[0][0] > 0.45:
            late.append((0, evs[0][0], 0))
        # no chunk should end mid-event on the relayed path
        ends_mid = [
            round(t, 2) for t, c in res["chunks"] if not (c.endswith(b"\n\n") or c.endswith(b"\r\n\r\n"))
        ]
        if ends_mid:
            problems.append(f"chunks ending mid-event at {ends_mid}")
    if name == "big":
        big_t = [t for t, e in evs if len(e) > 256 * 1024]
        if not big_t or big_t[0] > 1.6:
            late.append(("big", big_t, 0.3))
    if late:
        problems.append(f"late events (event, arrived, sent): {late}")
    if res["error"]:
        problems.append(f"client error {res['error']}")
    return problems


async def main():
    rep = FakeReplica(RPORT, handler)
    rep.all_methods = True
    rurl = await rep.start()
    proxy = Proxy(PPORT, rurl)
    out = []
    try:
        if not await proxy.ready():
            print("DEFECT: proxy --workers 2 did not start")
            return
        for name in ("normal", "crlf", "split", "big", "dies", "json"):
            rid = f"resp_{name}"
            st, owner = await post_owner(proxy, rid)
            path = f"/v1/responses/{rid}" + ("" if name == "json" else "?stream=true")
            res = await get_stream(proxy, path, owner, want_relayed=True)
            if res is None:
                out.append(f"DEFECT: [{name}] no GET landed on the non-owner worker (owner pid {owner})")
                continue
            if name == "json":
                body = b"".join(c for _, c in res["chunks"])
                ok = res["status"] == 200 and json.loads(body)["output"][0]["text"] == "z" * 100000
                out.append(
                    ("OK" if ok else "DEFECT")
                    + f": [relayed json] whole JSON answer intact ({len(body)} bytes, {res['ctype']})"
                )
                continue
            if name == "dies":
                evs = sse_events(b"".join(c for _, c in res["chunks"]).decode())
                nums = [d.get("sequence_number") for _, d in evs]
                errs = [d for n, d in evs if n == "error"]
                ok = nums == [5, 6, 7] and len(errs) == 1 and errs[0].get("type") == "error"
                out.append(
                    ("OK" if ok else "DEFECT")
                    + f": [relayed dies] replica cut after 5,6: numbers {nums}, error events {len(errs)}"
                )
                continue
            problems = check_normal(name, res)
            out.append(
                ("DEFECT" if problems else "OK")
                + f": [relayed {name}] "
                + ("; ".join(problems) or f"complete, event by event ({len(res['chunks'])} chunks)")
            )
        # kill the owner worker mid-stream
        rid = "resp_kill"
        st, owner = await post_owner(proxy, rid)
        if owner is None:
            print("DEFECT: harness: owner pid not found")
            return
        killed = {}

        async def on_chunk(res):
            evs, _ = event_times(res["chunks"])
            if len(evs) >= 3 and not killed:
                killed["t"] = time.monotonic() - res["t0"]
                os.kill(owner, signal.SIGKILL)

        res = await get_stream(proxy, f"/v1/responses/{rid}?stream=true", owner, True, on_chunk=on_chunk)
        if res is None:
            out.append("DEFECT: [kill] no GET landed on the non-owner worker")
        else:
            raw = b"".join(c for _, c in res["chunks"])
            evs = sse_events(raw.decode())
            nums = [d.get("sequence_number") for _, d in evs]
            last_name, last = evs[-1] if evs else (None, {})
            end_t = res["chunks"][-1][0] if res["chunks"] else None
            data_nums = nums[:-1]
            ok = (
                last_name == "error"
                and isinstance(last, dict)
                and last.get("type") == "error"
                and data_nums == list(range(len(data_nums)))
                and last.get("sequence_number") == len(data_nums)
                and end_t is not None
                and end_t - killed.get("t", 0) < 3
                and raw.endswith(b"\n\n")
            )
            out.append(
                ("OK" if ok else "DEFECT")
                + f": [relayed, owner SIGKILLed at {killed.get('t', 0):.2f}s] numbers {nums}, last event {last_name} {json.dumps(last)[:120]}, ended at {end_t and round(end_t, 2)}s, client error {res['error']}"
            )
        # the supervisor restarts it; a later GET still works
        for _ in range(100):
            await asyncio.sleep(0.1)
            if len(proxy.workers()) == 2 and owner not in proxy.workers():
                break
        await asyncio.sleep(2)
        st, owner2 = await post_owner(proxy, "resp_normal")
        res = await get_stream(proxy, "/v1/responses/resp_normal?stream=true", owner2, True)
        problems = ["no relayed GET"] if res is None else check_normal("normal", res)
        out.append(
            ("DEFECT" if problems else "OK")
            + f": after the owner's restart (workers {proxy.workers()}), a relayed resumed stream: "
            + ("; ".join(problems) or "complete")
        )
    finally:
        proxy.stop()
        await rep.stop()
    for l in out:
        print(l, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
