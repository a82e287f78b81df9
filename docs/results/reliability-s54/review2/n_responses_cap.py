# ruff: noqa
"""`n` on /v1/responses (vLLM ignores it: one answer) still multiplies the proxy's cap (proxy/calls.py reads
`fields.n` on every route). A session's call runs on replica R (long); a second call of the session beside it:
/v1/responses, max_output_tokens 60, with n=100 vs without n. Where does it run (same replica = kept beside;
other = spilled as if it needed 100x60 tokens of KV)? tiny-cpu: 4096 tokens of KV per replica."""

import os, sys, json, time, threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *

res = {}
for j, name in enumerate(os.environ.get("TREES", "AFTER,BEFORE").split(",")):
    tree = {"AFTER": AFTER, "MID": MID, "BEFORE": BEFORE}[name]
    sp, pp = 27960 + 0 * j, 27950  # sequential stacks reuse ports
    with stack(tree, sp + 10 * j, pp + 5 * j, sim_args=("--profile", "tiny-cpu", "--time-scale", "1")) as url:
        CASES = [("no n", {}), ("n=100", {"n": 100})]
        if os.environ.get("MSG"):
            CASES = [("msg no n", {}), ("msg n=100", {"n": 100})]
        if os.environ.get("CHAT"):
            CASES = [
                ("chat n=100 max_tokens=60", {"n": 100, "max_tokens": 60, "temperature": 1.0}),
                ("chat n=100 no max_tokens", {"n": 100, "temperature": 1.0}),
            ]
        if os.environ.get("REV"):
            CASES = CASES[::-1]
        for case, extra in CASES:
            same = 0
            answers = []
            for rep in range(4):
                sid = f"{case}-{rep}-{j}".replace(" ", "").replace("=", "")
                long_out = {}

                def long():
                    host = url.split("//")[1]
                    import http.client

                    c = http.client.HTTPConnection(host, timeout=120)
                    c.request(
                        "POST",
                        "/v1/chat/completions",
                        body=json.dumps(
                            {
                                "model": "saga-sim",
                                "messages": [{"role": "user", "content": "long " + sid}],
                                "max_tokens": 600,
                                "ignore_eos": True,
                            }
                        ),
                        headers={"Content-Type": "application/json", "X-Session-ID": sid},
                    )
                    r = c.getresponse()
                    long_out["replica"] = r.getheader("X-Saga-Replica")
                    r.read()

                t = threading.Thread(target=long)
                t.start()
                time.sleep(0.4)
                host = url.split("//")[1]
                import http.client

                c = http.client.HTTPConnection(host, timeout=120)
                if case.startswith("msg"):
                    body = {
                        "model": "saga-sim",
                        "messages": [{"role": "user", "content": "short question " + sid}],
                        "max_tokens": 60,
                        **extra,
                    }
                    route = "/v1/messages"
                elif case.startswith("chat"):
                    body = {
                        "model": "saga-sim",
                        "messages": [{"role": "user", "content": "short question " + sid}],
                        **extra,
                    }
                    route = "/v1/chat/completions"
                else:
                    body = {
                        "model": "saga-sim",
                        "input": "short question " + sid,
                        "max_output_tokens": 60,
                        "store": False,
                        **extra,
                    }
                    route = "/v1/responses"
                c.request(
                    "POST",
                    route,
                    body=json.dumps(body),
                    headers={"Content-Type": "application/json", "X-Session-ID": sid},
                )
                r = c.getresponse()
                rep_b = r.getheader("X-Saga-Replica")
                d = json.loads(r.read())
                st = r.status
                t.join()
                same += rep_b == long_out.get("replica")
                answers.append(
                    (
                        st,
                        (d.get("usage") or {}).get("output_tokens")
                        or d.get("usage", {}).get("completion_tokens"),
                    )
                )
            res[(name, case)] = same
            print(
                name,
                case,
                f"beside call kept on the session's replica {same}/4; answers (status, output_tokens):",
                answers,
                flush=True,
            )
if os.environ.get("MSG"):
    a = res.get(("AFTER", "msg n=100"))
    b = res.get(("BEFORE", "msg n=100"))
    print(
        "DEFECT" if a is not None and b is not None and a < b else "OK",
        "/v1/messages with n=100 (ignored by vLLM) kept beside its session:",
        {f"{k[0]} {k[1]}": f"{v}/4" for k, v in res.items()},
    )
    sys.exit()
if os.environ.get("CHAT"):
    print(
        "INFO chat n=100 beside its session (kept on its replica):",
        {f"{k[0]} {k[1]}": f"{v}/4" for k, v in res.items()},
    )
    sys.exit()
a = res.get(("AFTER", "n=100"))
b = res.get(("BEFORE", "n=100"))
print(
    "DEFECT" if a is not None and b is not None and a < b else "OK",
    "/v1/responses with n=100 (ignored by vLLM) kept beside its session:",
    {f"{k[0]} {k[1]}": f"{v}/4" for k, v in res.items()},
)
