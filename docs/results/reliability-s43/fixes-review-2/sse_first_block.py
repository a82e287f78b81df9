# ruff: noqa
import os, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get(
    "SAGA_ROOT",
    os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..")),
)
LOGS = tempfile.mkdtemp(prefix="saga-r15-")
import sys, json, time

sys.path.insert(0, ROOT)
from proxy.sse_scan import StreamScanner


def ev(o):
    return b"data: " + json.dumps(o, separators=(",", ":")).encode() + b"\n\n"


U = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}


def chunk(text, usage=None, role=False, fr=None):
    d = {"content": text}
    if role:
        d["role"] = "assistant"
    o = {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": d, "finish_reason": fr}],
    }
    if usage is not None:
        o["usage"] = usage
    return o


final = {"id": "c", "choices": [], "usage": U}


def run(chunks):
    s = StreamScanner(path="/v1/chat/completions")
    out = b"".join(s.feed_stripping_usage(c) for c in chunks) + s.flush()
    return out, s


results = []
# A: forced usage (usage in every chunk incl role chunk), final usage event must be KEPT
forced = [
    ev(chunk("", U, role=True)),
    ev(chunk("hi", U)),
    ev(chunk("", U, fr="stop")),
    ev(final),
    b"data: [DONE]\n\n",
]
out, _ = run(forced)
results.append(("forced: usage kept", b'"choices":[]' in out))
# B: forced, but first event arrives split across reads (first complete block = role chunk cut mid-usage)
raw = b"".join(forced)
cut = raw.find(b'"usage"') + 3
out, _ = run([raw[:cut], raw[cut:]])
results.append(("forced split mid-usage of first event: kept", b'"choices":[]' in out))
# C: forced, with the role chunk having usage but a choice field of an unexpected type (vLLM extension fields)
odd = chunk("", U, role=True)
odd["choices"][0]["delta"]["tool_calls"] = []
odd["choices"][0]["logprobs"] = None
odd["choices"][0]["stop_reason"] = None
out, _ = run([ev(odd), ev(chunk("hi", U)), ev(final)])
results.append(("forced w/ extra fields: kept", b'"choices":[]' in out))
# D: not forced; tokens say "usage"; usage:null in chunks (vLLM sends null usage when not continuous)
nf = [
    ev(chunk("", None, role=True) | {"usage": None}),
    ev(chunk('"usage"', None) | {"usage": None}),
    ev(chunk("x") | {"usage": None}),
    ev(final),
    b"data: [DONE]\n\n",
]
out, _ = run(nf)
results.append(("not forced, usage:null: stripped", b'"choices":[]' not in out))
# E: not forced; first block contains both a chunk with text '"usage":{' and the final usage event (short answer in one read)
nf2 = b"".join(
    [
        ev(chunk('{"usage":{"a":1},"choices":[{}]}')),
        ev(chunk("", None, fr="stop")),
        ev(final),
        b"data: [DONE]\n\n",
    ]
)
out, _ = run([nf2])
results.append(("not forced, one read with usage-ish text: stripped", b'"choices":[]' not in out))
# F: CRLF framing forced
crlf = [c.replace(b"\n", b"\r\n") for c in forced]
out, _ = run(crlf)
results.append(("forced CRLF: kept", b'"choices":[]' in out))
# G: forced where first complete block is a comment/keepalive only
out, _ = run([b": ping\n\n"] + forced)
results.append(("forced after ': ping' keepalive first: kept", b'"choices":[]' in out))
# H: forced with usage whose fields have unexpected types (e.g. prompt_tokens_details with extra, or float)
u2 = dict(U, prompt_tokens_details={"cached_tokens": None, "audio_tokens": 0})
out, _ = run([ev(chunk("", u2, role=True)), ev(chunk("a", u2)), ev(final)])
results.append(("forced w/ details: kept", b'"choices":[]' in out))
# I: cost: huge first block of many events containing 'usage' in text, none forced
big = b"".join(ev(chunk('usage "usage"')) for _ in range(20000)) + ev(final)
t = time.perf_counter()
out, _ = run([big])
dt = time.perf_counter() - t
results.append(
    (f"huge first block {len(big) >> 10} KiB in {dt * 1000:.0f} ms: stripped", b'"choices":[]' not in out)
)
# J: deeply nested JSON in a usage-bearing event
deep = b'data: {"usage":{}, "choices":' + b"[" * 100000 + b"]" * 100000 + b"}\n\n"
try:
    out, _ = run([deep, ev(final)])
    results.append(("deep nest: no crash, stripped", b'"choices":[]' not in out))
except BaseException as e:
    results.append((f"deep nest raised {type(e).__name__}: {e}", False))
bad = [n for n, ok in results if not ok]
for n, ok in results:
    print(("ok  " if ok else "BAD ") + n)
print(("DEFECT: " + "; ".join(bad)) if bad else "OK: all forced-usage cases decided right")
