# ruff: noqa
"""What the predictor learns from an n=3 call whose choice 0 answers in text ("stop") and choices 1, 2 call
tools t1, t2 (fake2.py): whole vs streamed, session named (X-Session-ID) vs not. A whole answer's state is
choice 0's: "answer". Each variant is its own agent type (own system prompt); 4 calls each (the client goes on
with choice 0); /saga/v1/graphs nodes are read per agent type."""

import os, sys, json, subprocess, signal, contextlib, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *

TREE = os.environ.get("TREE", "/tmp/snap54c")
FP, PP = int(os.environ.get("FP", "27410")), int(os.environ.get("PP", "27400"))
here = os.path.dirname(os.path.abspath(__file__))
f = subprocess.Popen(["python3", os.path.join(here, "fake2.py"), str(FP)], start_new_session=True)
p = subprocess.Popen(
    [
        "python3",
        "-m",
        "proxy",
        "serve",
        "--port",
        str(PP),
        "--replica",
        f"http://127.0.0.1:{FP}",
        "--no-access-log",
    ],
    cwd=TREE,
    start_new_session=True,
    stdout=open(f"{LOG}/proxy-state-{PP}.log", "w"),
    stderr=subprocess.STDOUT,
)
res = {}
seen = set()
try:
    wait_http(f"http://127.0.0.1:{FP}/health")
    wait_http(f"http://127.0.0.1:{PP}/health")
    url = f"http://127.0.0.1:{PP}"
    tools = [
        {"type": "function", "function": {"name": f"t{i}", "parameters": {"type": "object"}}}
        for i in range(3)
    ]
    for stream in (False, True):
        for named in (False, True):
            tag = f"{'stream' if stream else 'whole'}-{'named' if named else 'unnamed'}"
            msgs = [
                {"role": "system", "content": f"You are agent {tag} {time.time()}. " * 6},
                {"role": "user", "content": "go"},
            ]
            sid = None
            for step in range(4):
                b = {
                    "model": "saga-sim",
                    "messages": msgs,
                    "tools": tools,
                    "n": 3,
                    "max_tokens": 20,
                    "stream": stream,
                }
                h = {"X-Session-ID": f"sess-{tag}-{PP}"} if named else {}
                st, txt, sid = post(url, b, headers=h)
                assert st == 200, txt[:200]
                if stream:
                    c0 = "".join(
                        (c.get("delta") or {}).get("content") or ""
                        for e in sse_events(txt)
                        for c in e.get("choices", [])
                        if c["index"] == 0
                    )
                else:
                    c0 = json.loads(txt)["choices"][0]["message"]["content"]
                msgs = msgs + [
                    {"role": "assistant", "content": c0},
                    {"role": "user", "content": f"next {step}"},
                ]
            time.sleep(1.3)
            g = get(url + "/saga/v1/graphs")
            for gr in g["graphs"]:
                if gr.get("agent_type") in seen:
                    continue
                seen.add(gr.get("agent_type"))
                res[tag] = sorted(
                    {str(nd.get("id") or nd.get("key") or nd.get("name") or nd) for nd in gr.get("nodes", [])}
                    - {"start"}
                )
            print(tag, res.get(tag), flush=True)
    want = res.get("whole-unnamed")
    bad = [t for t in res if res[t] != want]
    print("DEFECT" if bad else "OK", "predictor states per variant (whole answer: choice 0's):", res)
finally:
    for x in (p, f):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(x.pid, signal.SIGTERM)
        x.wait(10)
