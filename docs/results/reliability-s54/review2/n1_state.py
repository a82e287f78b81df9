# ruff: noqa
"""Ordinary n=1 calls (simulator, tool_choice required for T=tool, none for T=text): the predictor's states,
whole vs streamed, named vs unnamed session: all four must agree (no regression from the choice-0 reading)."""

import os, sys, json, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *

TREE = os.environ.get("TREE", "/tmp/snap54c")
SP, PP = int(os.environ.get("SP", "27510")), int(os.environ.get("PP", "27500"))
tools = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
res, seen = {}, set()
with stack(TREE, SP, PP, sim_args=("--time-scale", "50"), replicas=1) as url:
    for kind, choice in (("tool", "required"), ("text", "none")):
        for stream in (False, True):
            for named in (False, True):
                tag = f"{kind}-{'stream' if stream else 'whole'}-{'named' if named else 'unnamed'}"
                msgs = [
                    {"role": "system", "content": f"You are agent {tag} {time.time()}. " * 6},
                    {"role": "user", "content": "weather in Paris?"},
                ]
                for step in range(3):
                    b = {
                        "model": "saga-sim",
                        "messages": msgs,
                        "tools": tools,
                        "tool_choice": choice,
                        "max_tokens": 20,
                        "stream": stream,
                    }
                    st, txt, sid = post(url, b, headers={"X-Session-ID": f"s-{tag}-{PP}"} if named else {})
                    assert st == 200, txt[:200]
                    if stream:
                        evs = sse_events(txt)
                        content = "".join(
                            (c.get("delta") or {}).get("content") or ""
                            for e in evs
                            for c in e.get("choices", [])
                        )
                        tcs = {}
                        for e in evs:
                            for c in e.get("choices", []):
                                for t in (c.get("delta") or {}).get("tool_calls") or []:
                                    d = tcs.setdefault(t["index"], {"id": None, "name": "", "arguments": ""})
                                    d["id"] = t.get("id") or d["id"]
                                    fn = t.get("function") or {}
                                    d["name"] = fn.get("name") or d["name"]
                                    d["arguments"] += fn.get("arguments") or ""
                        am = {"role": "assistant", "content": content or None}
                        if tcs:
                            am["tool_calls"] = [
                                {
                                    "id": d["id"],
                                    "type": "function",
                                    "function": {"name": d["name"], "arguments": d["arguments"]},
                                }
                                for d in tcs.values()
                            ]
                    else:
                        m = json.loads(txt)["choices"][0]["message"]
                        am = {k: v for k, v in m.items() if k in ("role", "content", "tool_calls")}
                    msgs = msgs + [am]
                    msgs.append(
                        {"role": "tool", "tool_call_id": am["tool_calls"][0]["id"], "content": "sunny"}
                        if am.get("tool_calls")
                        else {"role": "user", "content": f"next {step}"}
                    )
                time.sleep(1.3)
                for gr in get(url + "/saga/v1/graphs")["graphs"]:
                    if gr["agent_type"] in seen:
                        continue
                    seen.add(gr["agent_type"])
                    res[tag] = (
                        sorted(
                            {str(nd.get("id") or nd.get("key") or nd.get("name") or nd) for nd in nd_list}
                            - {"start"}
                        )
                        if (nd_list := gr.get("nodes", []))
                        else []
                    )
                print(tag, res.get(tag), flush=True)
bad = [k for k in res if res[k] != res[k.split("-")[0] + "-whole-unnamed"]]
print("DEFECT" if bad else "OK", "n=1 predictor states agree across whole/stream/named/unnamed:", res)
