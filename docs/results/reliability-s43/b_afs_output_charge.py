# ruff: noqa
"""docs/fairness.md: afs charges 'decode of the expected output (the session's previous output length)' and
'a tenant with long outputs is charged for the decode time it takes'; the bound is on GPU time released.
A tenant that names a fresh session id on every call (or ends its session each call) is charged the default
200-token output whatever max_tokens it asks for, and no charge is corrected once the call's real usage is
known: with a gate of one call, a long-output tenant gets nearly all decode time beside a short-output one."""

import os, sys, json, threading, time, itertools

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *

P, S = 43410, 43400
CFG = """admin_token: adm
policy: session-affinity
api_keys: {sk-hog: hog, sk-light: light}
queue:
  order: afs
  gate: {type: max-in-flight-gate, params: {max_in_flight: 1}}
"""
tokens = {"hog": 0, "light": 0}
calls = {"hog": 0, "light": 0}
lock = threading.Lock()
stop = threading.Event()
ids = itertools.count()


def agent(tenant, max_tokens, rotate):
    sid = f"{tenant}-stable-{next(ids)}"
    while not stop.is_set():
        hdr = {
            "Authorization": f"Bearer sk-{tenant}",
            "X-Session-ID": f"{tenant}-{next(ids)}" if rotate else sid,
        }
        s, h, b = chat(
            P,
            [{"role": "user", "content": f"work item for {tenant}"}],
            hdr,
            max_tokens=max_tokens,
            ignore_eos=True,
            timeout=60,
        )
        if s == 200 and not stop.is_set():
            with lock:
                tokens[tenant] += json.loads(b)["usage"]["completion_tokens"]
                calls[tenant] += 1


def phase(rotate, secs=8):
    for k in tokens:
        tokens[k] = 0
        calls[k] = 0
    stop.clear()
    ts = [threading.Thread(target=agent, args=("hog", 1200, rotate)) for _ in range(3)]
    ts += [threading.Thread(target=agent, args=("light", 40, False)) for _ in range(3)]
    for t in ts:
        t.start()
    time.sleep(secs)
    stop.set()
    for t in ts:
        t.join()
    return dict(tokens), dict(calls)


try:
    setup(S, 1, P, config=CFG, tag="afs")
    ctl = phase(rotate=False)
    time.sleep(1)
    rot = phase(rotate=True)
    r_ctl = ctl[0]["hog"] / max(1, ctl[0]["light"])
    r_rot = rot[0]["hog"] / max(1, rot[0]["light"])
    print(f"hog in one session: tokens {ctl[0]} calls {ctl[1]} ratio {r_ctl:.1f}")
    print(f"hog with a new session id per call: tokens {rot[0]} calls {rot[1]} ratio {r_rot:.1f}")
    if r_rot > 3 * max(r_ctl, 1.0):
        print(
            f"DEFECT: under afs a tenant rotating session ids gets {r_rot:.0f}x the other tenant's decode tokens "
            f"(same tenant in one session: {r_ctl:.1f}x); charges use a 200-token guess, never the real usage"
        )
    else:
        print("OK: rotating session ids does not buy a long-output tenant more than its share")
finally:
    stop_all()
