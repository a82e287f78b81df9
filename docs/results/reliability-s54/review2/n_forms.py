# ruff: noqa
"""Each `n` form: the proxy's choice_count (NOW tree) vs the choices the real vLLM and the simulator return."""

import os, sys, json, subprocess

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *

NOW = os.environ.get("NOW", "/tmp/snap54c")
FORMS = [
    '"+2"',
    '"2."',
    '"02"',
    '"000003"',
    '"00000000002"',
    '"1_0"',
    '" 2 "',
    '"\\t2\\n"',
    '"2.0"',
    '"2.00"',
    '"2.000000000000000000001"',
    '"2.5"',
    "2.5",
    '"2e0"',
    '"1e1"',
    "2e0",
    "20e-1",
    "1e1",
    "2.0000000000000001",
    '"\\u0662"',
    '"\\uff12"',
    '"0x2"',
    '"-0"',
    '" +3 "',
    '"64.0"',
    "64.0",
    '"3.0e0"',
    '""',
    '"  "',
    "true",
    '"true"',
    "3",
    '"3"',
    '"4 "',
    '"2\\u00a0"',
    '"+2.0"',
    '"-2"',
    '"2.0.0"',
    '" 2.0 "',
    '"2 .0"',
    "1.0000000001",
    '"3_"',
    '"_3"',
    '"3__0"',
    '"0_3"',
    "DUP13",
    "DUP31",
    "DUPN1",
]


def cc(raws):
    code = "import sys,json\nfrom proxy.prompt_shape import choice_count\nfor r in json.load(sys.stdin): print(choice_count(r.encode()))"
    out = subprocess.run(
        ["python3", "-c", code], cwd=NOW, input=json.dumps(raws), capture_output=True, text=True, check=True
    ).stdout.split()
    return [int(x) for x in out]


def body(form, path):
    pre = '{"model":"saga-sim",' + (
        '"messages":[{"role":"user","content":"hi"}]'
        if path.endswith("chat/completions")
        else '"prompt":"hi"'
    )
    pre += ',"max_tokens":1,"temperature":0.8'
    if form == "DUP13":
        return pre + ',"n":1,"n":3}'
    if form == "DUP31":
        return pre + ',"n":3,"n":1}'
    if form == "DUPN1":
        return pre + ',"n":null,"n":3}'
    return pre + ',"n":%s}' % form


def probe(url, form, path):
    st, txt, _ = post(url, None, path=path, rawbody=body(form, path).encode())
    if st != 200:
        return 0, txt[:90].decode(errors="replace").replace("\n", " ")
    return len(json.loads(txt)["choices"]), ""


def proxy_fields_n(form, path):
    # what the proxy's field reader takes as `n` for duplicate keys: decode the body with the proxy's own reader
    return None


if __name__ == "__main__":
    url = sys.argv[1]
    label = sys.argv[2]
    raws = []
    for f in FORMS:
        if f.startswith("DUP"):
            raws.append(
                {"DUP13": "3", "DUP31": "1", "DUPN1": "3"}[f]
            )  # last value (json.loads), filled below
        else:
            raws.append(f)
    counts = cc(raws)
    bad = 0
    for path in ("/v1/chat/completions", "/v1/completions"):
        for f, c in zip(FORMS, counts):
            n, err = probe(url, f, path)
            served = n if n else 1  # refused: the proxy's count 1 is right (no choices to weigh)
            flag = "" if (served == c or (f.startswith("DUP"))) else "  <-- MISMATCH"
            bad += bool(flag)
            print(f"{label} {path:22} n={f:28} served={n} proxy_count={c} {flag} {err}")
    print(
        ("DEFECT" if bad else "OK"),
        f"{label}: forms where the proxy count differs from the choices served: {bad} of {2 * len(FORMS)}",
    )
