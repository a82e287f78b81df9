# ruff: noqa
import os
from pathlib import Path
import asyncio, json, time, sys

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *

EV = [
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"fake","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":37,"output_tokens":0}}}\n\n',
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n',
    b'event: ping\ndata: {"type": "ping"}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"lo \\u00e9\xe2\x9c\x93"}}\n\n',
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n',
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":37,"output_tokens":2}}\n\n',
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
]


def handler(m, p, h, b):
    r = basic_routes(m, p, h, b)
    if r:
        return r
    return stream(EV, delay=0.15)


async def main():
    fake = Fake(26201, handler)
    await fake.start()
    px = Proxy(26001, ["http://127.0.0.1:26201"])
    try:
        await px.wait_ready()
        body = json.dumps(
            {
                "model": "fake",
                "max_tokens": 50,
                "stream": True,
                "messages": [{"role": "user", "content": "hello"}],
            }
        )
        r, w = await asyncio.open_connection("127.0.0.1", 26001)
        w.write(
            post(
                "/v1/messages",
                body,
                [("x-api-key", "sk-x"), ("anthropic-version", "2023-06-01"), ("X-Session-ID", "s-msg-1")],
            )
        )
        await w.drain()
        head = await r.readuntil(b"\r\n\r\n")
        arrivals = []
        t0 = time.time()
        got = await read_chunked(r, on_chunk=lambda c: arrivals.append((time.time() - t0, c)))
        w.close()
        sent = b"".join(EV)
        # events per arrival
        per = [c.count(b"\n\n") for _, c in arrivals]
        upstream = fake.requests[-1]
        await asyncio.sleep(0.5)
        inf = await in_flight(26001)
        sess = json.loads(await aget(26001, "/saga/v1/sessions"))
        problems = []
        if got != sent:
            problems.append(f"bytes differ: got {got[:200]!r}... len {len(got)} vs {len(sent)}")
        if max(per) > 1:
            problems.append(f"events merged into one chunk: per-chunk counts {per}")
        if len(arrivals) < len(EV):
            problems.append(f"only {len(arrivals)} chunks for {len(EV)} events")
        if inf[0] != 0 or any(inf[1]):
            problems.append(f"in_flight after call {inf}")
        if b"text/event-stream" not in head:
            problems.append(f"head {head!r}")
        ub = json.loads(upstream[3])
        extra = set(ub) - set(json.loads(body))
        if problems:
            return "DEFECT: /v1/messages stream: " + "; ".join(problems)
        return f"OK: /v1/messages stream relayed byte-identical, {len(arrivals)} chunks one event each, gaps ~0.15s, in_flight {inf}; upstream body extra keys {sorted(extra)}; sessions {[(s['session_id'], s['calls']) for s in sess['sessions']]}"
    finally:
        px.stop()
        await fake.stop()


run(main)
