# ruff: noqa
"""odd `n` values: direct to the simulator vs through the proxy (AFTER) [vs real vLLM when VLLM_URL set]."""

import os, sys, json

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *

TREE = os.environ.get("TREE", AFTER)
VALS = [
    '"2"',
    "2.0",
    "null",
    "true",
    "false",
    "-1",
    "0",
    "1",
    "3",
    "16384",
    "16385",
    "10000000000",
    "1e1",
    '"abc"',
    "[2]",
]


def body(nraw, path, stream=False):
    if path == "/v1/chat/completions":
        b = '{"model":"%s","messages":[{"role":"user","content":"hi there"}],"max_tokens":3,"temperature":0.8%s,"n":%s}'
    else:
        b = '{"model":"%s","prompt":"hi there","max_tokens":3,"temperature":0.8%s,"n":%s}'
    return (b % (MODEL, ',"stream":true' if stream else "", nraw)).encode()


def probe(url, nraw, path, stream):
    st, txt, sid = post(url, None, path=path, rawbody=body(nraw, path, stream))
    if st != 200:
        try:
            msg = json.loads(txt).get("error", {}).get("message", "")[:60]
        except Exception:
            msg = txt[:60]
        return f"{st}:{msg}"
    if stream:
        idx = sorted({c["index"] for e in sse_events(txt) for c in e.get("choices", [])})
        return f"200 choices={len(idx)}"
    return f"200 choices={len(json.loads(txt)['choices'])}"


MODEL = os.environ.get("MODEL", "saga-sim")


def table(url, label):
    res = {}
    for path in ("/v1/chat/completions", "/v1/completions"):
        for stream in (False, True):
            for v in VALS:
                res[(path, stream, v)] = probe(url, v, path, stream)
    return res


if os.environ.get("VLLM_URL"):
    r = table(os.environ["VLLM_URL"], "vllm")
    print(json.dumps({"|".join(map(str, k)): v for k, v in r.items()}))
    sys.exit()
with stack(TREE, 26010, 26000, sim_args=("--time-scale", "50", "--profile", "tiny-cpu")) as url:
    rp = table(url, "proxy")
    rs = table("http://127.0.0.1:26010", "sim")
    st = get(url + "/saga/v1/state")
bad = 0
for k in rp:
    flag = "" if rp[k] == rs[k] else "  <-- proxy differs"
    bad += bool(flag)
    print(k, "sim:", rs[k], "| proxy:", rp[k], flag)
json.dump(
    {"|".join(map(str, k)): v for k, v in rs.items()},
    open(f"/tmp/rev54/n_values_sim_{os.path.basename(TREE)}.json", "w"),
)
print(
    ("DEFECT" if bad else "OK"),
    f"n values: proxy answer differs from simulator's in {bad} of {len(rp)} cases",
)
