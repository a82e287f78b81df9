# ruff: noqa
import os
from pathlib import Path
import asyncio, json, sys

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sse_harness import run, enc, sse

U = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


def tokev(text, finish=None, usage=None):
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


def usage_ev():
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [],
        "usage": U,
    }


DONE = b"data: [DONE]\n\n"

scen, expect, ask = {}, {}, set()


def add(name, pieces, exp, asked=False):
    scen[name] = pieces
    expect[name] = exp
    if asked:
        ask.add(name)


# 1 compact vLLM
toks = [sse(enc(tokev(t))) for t in ["Hel", "lo", " world"]] + [sse(enc(tokev("", "stop")))]
u = sse(enc(usage_ev()))
add("compact", toks + [u, DONE], b"".join(toks + [DONE]))
# 2 json.dumps spacing
toks2 = [sse(enc(tokev(t), True)) for t in ["a", "b"]]
u2 = sse(enc(usage_ev(), True))
add("spaced", toks2 + [u2, DONE], b"".join(toks2 + [DONE]))
# 3 odd spacing
u3 = b'data: {"id":"c","object":"chat.completion.chunk","choices" :\t[ ] , "usage" : {"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}\n\n'
add("oddspace", toks + [u3, DONE], b"".join(toks + [DONE]))
# 4 first token is the word usage
t4 = [sse(enc(tokev("usage"))), sse(enc(tokev(" usage:")))] + toks
add("word_usage", t4 + [u, DONE], b"".join(t4 + [DONE]))
# 5 content containing "usage":{ text and "choices":[] text
t5 = [sse(enc(tokev('"usage": {"x":1} "choices":[]'))), sse(enc(tokev('{"choices":[],"usage":{}}')))] + toks
add("content_json", t5 + [u, DONE], b"".join(t5 + [DONE]))
# 6 client asked: keep everything
add("asked", toks + [u, DONE], b"".join(toks + [u, DONE]), asked=True)
add("asked_spaced", toks2 + [u2, DONE], b"".join(toks2 + [u2, DONE]), asked=True)
# 7 CRLF
crt = [b"data: " + enc(tokev(t)) + b"\r\n\r\n" for t in ["x", "y"]]
cru = b"data: " + enc(usage_ev()) + b"\r\n\r\n"
add("crlf", crt + [cru, b"data: [DONE]\r\n\r\n"], b"".join(crt + [b"data: [DONE]\r\n\r\n"]))
# 8 last event has choices and usage (no usage-only event): keep
t8 = toks[:-1] + [sse(enc(tokev("", "stop", U)))]
add("last_both", t8 + [DONE], b"".join(t8 + [DONE]))
# 9 all in one piece
add("onepiece", [b"".join(toks + [u, DONE])], b"".join(toks + [DONE]))
# 10 empty choices but no usage (Azure prompt_filter_results): keep
az = sse(b'{"choices":[],"prompt_filter_results":[{"prompt_index":0}]}')
add("azure_first", [az] + toks + [u, DONE], b"".join([az] + toks + [DONE]))
# 11 usage null in token events (OpenAI style)
t11 = [sse(enc(tokev(t, None, None) | {"usage": None})) for t in ["p", "q"]]
add("usage_null", t11 + [u, DONE], b"".join(t11 + [DONE]))
# 12 split at every byte of (last token + usage event + DONE)
tail = toks[-1] + u + DONE
for k in range(1, len(tail)):
    add(f"split{k}", toks[:-1] + [tail[:k], tail[k:]], b"".join(toks[:-1] + [toks[-1], DONE]))

out = asyncio.run(run(scen, 25101, 25102, ask))
bad = []
for name, exp in expect.items():
    st, got, up = out.get(name, (None, b"", b""))
    if st != 200 or got != exp:
        bad.append((name, st, got[-300:], exp[-300:]))
if bad:
    n, st, g, e = bad[0]
    print(
        f"DEFECT: SSE stripping wrong in {len(bad)}/{len(expect)} scenarios ({[b[0] for b in bad][:8]}); first {n}: status {st} got tail {g!r} expected tail {e!r}"
    )
else:
    print(
        f"OK: SSE usage stripping correct in {len(expect)} scenarios (compact, json.dumps spacing, odd spacing, 'usage' word/JSON text in content, client-asked kept, CRLF, last event with choices+usage kept, Azure empty choices kept, usage:null, split at every byte {len(tail) - 1} positions)"
    )
