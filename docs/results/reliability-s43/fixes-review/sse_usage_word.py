# ruff: noqa
"""A streamed /v1/completions answer whose first token is the word `usage` (text "usage") is taken for a replica
forcing usage (vLLM --enable-force-include-usage): the usage-only event the proxy asked for, which the client did
not, is then relayed to the client (choices: [])."""

import os, sys, json, time, http.client

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *

R, P = 44020, 44021


def stream(path, body):
    c = http.client.HTTPConnection("127.0.0.1", P, timeout=20)
    c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


try:
    MODE = sys.argv[1] if len(sys.argv) > 1 else "usageword"
    start(
        [os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_replica.py"), str(R), MODE],
        "rep.log",
        module=False,
    )
    wait_port(R)
    proxy(P, [f"http://127.0.0.1:{R}"])
    bad = []
    for path, body in (
        ("/v1/completions", {"model": "m", "prompt": "say it", "stream": True}),
        (
            "/v1/chat/completions",
            {"model": "m", "messages": [{"role": "user", "content": "say it"}], "stream": True},
        ),
    ):
        s, data = stream(path, body)
        sent = json.loads(req(R, "GET", "/_bodies")[2])[-1]["body"]
        asked = "include_usage" in sent
        leaked = [l for l in data.split(b"\n") if l.startswith(b"data: {") and b'"choices":[]' in l]
        print(
            path,
            s,
            "proxy asked usage:",
            asked,
            "usage-only events relayed to a client that did not ask:",
            len(leaked),
        )
        if leaked:
            bad.append(path)
    if bad:
        print(
            f"DEFECT: a stream whose first token is the word 'usage' is taken for forced usage: the usage-only chunk (choices: []) the proxy asked for reaches a client that did not ask, on {', '.join(bad)}"
        )
    else:
        print("OK: the usage event the proxy asked for is stripped")
finally:
    stop_all()
