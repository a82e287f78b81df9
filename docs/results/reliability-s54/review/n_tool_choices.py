# ruff: noqa
"""Choices with different tool calls (fake replica: choices 0,1 tool calls t0/t1, choice 2 text), n=3, whole and
streamed: the client keeps choice k and goes on (assistant tool call + tool result); the next 2 calls must be
in the first call's session. Per tree, workers from WORKERS."""

import os, sys, json, time, subprocess, signal, contextlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *

W = int(os.environ.get("WORKERS", "1"))
res = {}
for j, name in enumerate(os.environ.get("TREES", "AFTER,BEFORE").split(",")):
    tree = {"AFTER": AFTER, "MID": MID, "BEFORE": BEFORE}[name]
    fp, pp = 26710 + 10 * j + 40 * W, 26700 + 10 * j + 40 * W
    f = subprocess.Popen(
        ["python3", os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_replica.py"), str(fp)],
        start_new_session=True,
    )
    args = [
        "python3",
        "-m",
        "proxy",
        "serve",
        "--port",
        str(pp),
        "--replica",
        f"http://127.0.0.1:{fp}",
        "--no-access-log",
        "--workers",
        str(W),
    ]
    p = subprocess.Popen(
        args,
        cwd=tree,
        start_new_session=True,
        stdout=open(f"{LOG}/proxy-tool-{pp}.log", "w"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{fp}/health")
        wait_http(f"http://127.0.0.1:{pp}/health")
        url = f"http://127.0.0.1:{pp}"
        for stream in (False, True):
            for keep in (0, 1, 2):
                kept = 0
                for rep in range(3):
                    opening = [
                        {"role": "system", "content": f"You are tool agent {name}{stream}{keep}{rep}. " * 8},
                        {"role": "user", "content": f"Do task {keep} {stream} {rep}"},
                    ]
                    tools = [
                        {"type": "function", "function": {"name": f"t{i}", "parameters": {"type": "object"}}}
                        for i in range(3)
                    ]
                    agents = [
                        {"msgs": list(opening), "keep": keep, "sids": []},
                        {"msgs": list(opening), "keep": (keep + 1) % 3, "sids": []},
                    ]
                    for step in range(3):
                        for ag in agents:
                            msgs = ag["msgs"]
                            b = {
                                "model": "saga-sim",
                                "messages": msgs,
                                "tools": tools,
                                "n": 3,
                                "max_tokens": 20,
                                "stream": stream,
                            }
                            st, txt, sid = post(url, b)
                            assert st == 200, txt[:200]
                            ag["sids"].append(sid)
                            k = ag["keep"]
                            if stream:
                                ch = {}
                                for e in sse_events(txt):
                                    for c in e.get("choices", []):
                                        d = c.get("delta", {})
                                        m = ch.setdefault(c["index"], {"content": "", "calls": {}})
                                        m["content"] += d.get("content") or ""
                                        for tc in d.get("tool_calls") or []:
                                            cc = m["calls"].setdefault(
                                                tc["index"], {"id": None, "name": "", "arguments": ""}
                                            )
                                            cc["id"] = tc.get("id") or cc["id"]
                                            fn = tc.get("function") or {}
                                            cc["name"] = fn.get("name") or cc["name"]
                                            cc["arguments"] += fn.get("arguments") or ""
                                m = ch[k]
                                am = {"role": "assistant", "content": m["content"] or None}
                                if m["calls"]:
                                    am["tool_calls"] = [
                                        {
                                            "id": c["id"],
                                            "type": "function",
                                            "function": {"name": c["name"], "arguments": c["arguments"]},
                                        }
                                        for c in m["calls"].values()
                                    ]
                            else:
                                c = json.loads(txt)["choices"][k]["message"]
                                am = {kk: v for kk, v in c.items() if kk in ("role", "content", "tool_calls")}
                            msgs.append(am)
                            if am.get("tool_calls"):
                                msgs.append(
                                    {
                                        "role": "tool",
                                        "tool_call_id": am["tool_calls"][0]["id"],
                                        "content": f"result {step}",
                                    }
                                )
                            else:
                                msgs.append({"role": "user", "content": f"next {step}"})
                    a, b2 = agents
                    kept += (
                        len(set(a["sids"])) == 1
                        and len(set(b2["sids"])) == 1
                        and a["sids"][0] != b2["sids"][0]
                    )
                res[(name, stream, keep)] = kept
                print(
                    name,
                    f"w={W}",
                    "stream" if stream else "whole",
                    "keep",
                    keep,
                    f"two agents (keep {keep} / {(keep + 1) % 3}) each one session and apart: {kept}/3",
                    flush=True,
                )
    finally:
        for x in (p, f):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(x.pid, signal.SIGTERM)
            x.wait(10)
a = {k: v for k, v in res.items() if k[0] == "AFTER"}
bad = [k for k, v in a.items() if v < 3]
print(
    "DEFECT" if bad else "OK",
    f"w={W} tool-call choices kept in session (of 3):",
    {f"{k[0]}-{'s' if k[1] else 'w'}-keep{k[2]}": v for k, v in res.items()},
)
