# ruff: noqa
import os
from pathlib import Path
import asyncio, json, sys

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sse_harness import run, enc, sse

U = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


def tokev(text, finish=None, usage=None, extra=None):
    ev = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": finish}],
    }
    if usage is not None:
        ev["usage"] = usage
    return ev


UE = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [], "usage": U}
DONE = b"data: [DONE]\n\n"
toks = [sse(enc(tokev(t))) for t in ["Hel", "lo"]] + [sse(enc(tokev("", "stop")))]
u = sse(enc(UE))
scen, expect, ask = {}, {}, set()


def add(name, pieces, exp, asked=False):
    scen[name] = pieces
    expect[name] = exp
    if asked:
        ask.add(name)


add("nospace", toks + [b"data:" + enc(UE) + b"\n\n", DONE], b"".join(toks + [DONE]))
add("idevent", toks + [b"id: 7\nevent: message\ndata: " + enc(UE) + b"\n\n", DONE], b"".join(toks + [DONE]))
add("keepalive", [b": ping\n\n"] + toks + [u, DONE], b"".join([b": ping\n\n"] + toks + [DONE]))
nul = [sse(enc(tokev("a") | {"usage": None})), sse(enc(tokev("b") | {"usage": None}))]
add("null_onechunk", [b"".join(nul + [u, DONE])], b"".join(nul + [DONE]))
rev = b'data: {"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2},"choices":[],"id":"c"}\n\n'
add("reversed", toks + [rev, DONE], b"".join(toks + [DONE]))
forced = [sse(enc(tokev(t, None, U))) for t in ["x", "y"]]
add("forced_by_replica", forced + [u, DONE], b"".join(forced + [u, DONE]))
two_usage = toks + [u, u, DONE]
add("two_usage_events", two_usage, b"".join(toks + [DONE]))
big = sse(enc(tokev("z" * 300_000)))
add("huge_then_usage", [big[:150_000], big[150_000:280_000], big[280_000:] + u + DONE], b"".join([big, DONE]))
add("huge_split_blank", [big[:-1], big[-1:] + u + DONE], b"".join([big, DONE]))
add("huge_split_blank2", [big[:150_000], big[150_000:-1], big[-1:] + u, DONE], b"".join([big, DONE]))
add("usage_then_huge", toks + [u + big[:100], big[100:], DONE], b"".join(toks + [big, DONE]))
cu = sse(
    b'{"id":"c","object":"text_completion","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
)
ct = [sse(b'{"id":"c","object":"text_completion","choices":[{"index":0,"text":"hi","finish_reason":null}]}')]
add("cmpl_compact", ct + [cu, DONE], b"".join(ct + [DONE]))
add("cmpl_asked", ct + [cu, DONE], b"".join(ct + [cu, DONE]), asked=True)
mixed = [b"data: " + enc(tokev("q")) + b"\r\n\r\n", u, DONE]
add("mixed_crlf_lf", mixed, b"".join([mixed[0], DONE]))
crlfsplit = b"data: " + enc(UE) + b"\r\n\r\n"
add("crlf_split_blank", toks + [crlfsplit[:-2], crlfsplit[-2:] + DONE], b"".join(toks + [DONE]))
out = asyncio.run(run(scen, 25121, 25122, ask))
bad = []
for name, exp in expect.items():
    st, got, up = out.get(name, (None, b"", b""))
    if st != 200 or got != exp:
        bad.append(
            f"{name}: status {st}, got {len(got)} B tail {got[-160:]!r} expected {len(exp)} B tail {exp[-160:]!r}"
        )
if bad:
    print(f"DEFECT: {len(bad)}/{len(expect)} SSE edge streams wrong: {bad}")
else:
    print(f"OK: {len(expect)} SSE edge streams relayed as a correct proxy would ({', '.join(expect)})")
