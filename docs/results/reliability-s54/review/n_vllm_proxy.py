# ruff: noqa
"""Real vLLM (VLLM_URL) direct vs through a proxy from TREE: stream shape for n>1 (usage chunk present or not,
choice indexes), and session chaining when the client keeps choice 1 or 2 (chat, whole and streamed)."""

import os, sys, json, subprocess, signal, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *

TREE = os.environ.get("TREE", AFTER)
V = os.environ.get("VLLM_URL", "http://127.0.0.1:26900")
PP = int(os.environ.get("PP", "26200"))


def shape(txt):
    evs = sse_events(txt)
    usage = [e.get("usage") for e in evs if e.get("usage")]
    idx = [c["index"] for e in evs for c in e.get("choices", [])]
    last = evs[-1] if evs else {}
    return {
        "events": len(evs),
        "usage_events": len(usage),
        "choices_in_last": len(last.get("choices", [])),
        "indexes": sorted(set(idx)),
        "usage": usage[-1] if usage else None,
    }


def text_by_index(txt, chat=True):
    t = {}
    for e in sse_events(txt):
        for c in e.get("choices", []):
            t.setdefault(c["index"], "")
            t[c["index"]] += (c.get("delta", {}).get("content") or "") if chat else (c.get("text") or "")
    return t


p = subprocess.Popen(
    ["python3", "-m", "proxy", "serve", "--port", str(PP), "--replica", V, "--no-access-log"],
    cwd=TREE,
    start_new_session=True,
    stdout=open(f"{LOG}/proxy-vllm-{PP}.log", "w"),
    stderr=subprocess.STDOUT,
)
bad = []
try:
    wait_http(f"http://127.0.0.1:{PP}/health")
    P = f"http://127.0.0.1:{PP}"
    base = {"model": "saga-sim", "max_tokens": 6, "temperature": 1.0, "n": 3, "stream": True, "seed": 7}
    for name, extra, path in [
        ("chat no stream_options", {}, "/v1/chat/completions"),
        ("chat include_usage false", {"stream_options": {"include_usage": False}}, "/v1/chat/completions"),
        ("chat include_usage true", {"stream_options": {"include_usage": True}}, "/v1/chat/completions"),
        (
            "chat continuous_usage",
            {"stream_options": {"include_usage": True, "continuous_usage_stats": True}},
            "/v1/chat/completions",
        ),
        ("completions no stream_options", {}, "/v1/completions"),
        ("completions include_usage true", {"stream_options": {"include_usage": True}}, "/v1/completions"),
    ]:
        b = dict(base, **extra)
        if "chat" in path:
            b["messages"] = [{"role": "user", "content": "Tell me a joke"}]
        else:
            b["prompt"] = "Tell me a joke"
        _, d, _ = post(V, b, path=path)
        _, q, _ = post(P, b, path=path)
        sd, sq = shape(d), shape(q)
        same = (sd["usage_events"], sd["indexes"], sd["choices_in_last"]) == (
            sq["usage_events"],
            sq["indexes"],
            sq["choices_in_last"],
        )
        same = same and text_by_index(d, "chat" in path) == text_by_index(q, "chat" in path)
        if not same:
            bad.append(name)
        print(
            name,
            "| direct:",
            {k: sd[k] for k in ("events", "usage_events", "indexes")},
            "| proxy:",
            {k: sq[k] for k in ("events", "usage_events", "indexes")},
            "" if same else "<-- differs",
            flush=True,
        )
    # chaining: keep choice k, go on; all calls should be one session
    for stream in (False, True):
        for keep in (1, 2):
            sys_ = {"role": "system", "content": f"You are agent {keep}{stream}. " * 10}
            msgs = [sys_, {"role": "user", "content": f"Write a poem about {keep} {stream}"}]
            sids = []
            for step in range(3):
                b = {
                    "model": "saga-sim",
                    "messages": msgs,
                    "max_tokens": 12,
                    "temperature": 1.0,
                    "n": 3,
                    "stream": stream,
                }
                st, txt, sid = post(P, b)
                sids.append(sid)
                texts = (
                    text_by_index(txt)
                    if stream
                    else {c["index"]: c["message"]["content"] for c in json.loads(txt)["choices"]}
                )
                msgs = msgs + [
                    {"role": "assistant", "content": texts[keep]},
                    {"role": "user", "content": f"more {step}"},
                ]
            ok = len(set(sids)) == 1
            if not ok:
                bad.append(f"chain stream={stream} keep={keep}")
            print("chain stream", stream, "keep", keep, "sessions", len(set(sids)), flush=True)
finally:
    os.killpg(p.pid, signal.SIGTERM)
    p.wait(10)
print(
    "DEFECT" if bad else "OK",
    os.path.basename(TREE),
    "proxy over real vLLM n=3:",
    bad or "stream shapes identical, chains kept",
)
