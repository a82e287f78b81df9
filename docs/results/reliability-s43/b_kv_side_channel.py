# ruff: noqa
"""With client API keys (docs: each key's tenant has sessions of its own; another tenant sending the same
conversation starts a session of its own), tenant beta can still tell whether tenant alpha sent a given prompt:
the proxy relays usage.prompt_tokens_details.cached_tokens, routes beta's guess by prefix to the replica
holding alpha's KV, and adds no per-tenant cache_salt (vLLM's isolation for shared prefix caches)."""

import os, sys, json, time, random

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *

P, S = 43610, 43600
CFG = "admin_token: adm\napi_keys: {sk-a: alpha, sk-b: beta}\n"
A = {"Authorization": "Bearer sk-a"}
B = {"Authorization": "Bearer sk-b"}


def cached(b):
    u = json.loads(b)["usage"]
    return (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0, u["prompt_tokens"]


try:
    setup(S, 4, P, config=CFG, tag="kv")
    rnd = random.Random(7)
    words = lambda n: " ".join(
        rnd.choice(["alpha", "bravo", "charlie", "delta", "echo", "fox", "golf", "hotel"]) for _ in range(n)
    )
    secret = [
        {"role": "system", "content": "Internal memo: " + words(600)},
        {"role": "user", "content": "Summarise the merger terms."},
    ]
    other = [
        {"role": "system", "content": "Internal memo: " + words(600)},
        {"role": "user", "content": "Summarise the merger terms."},
    ]
    s, h, b = chat(P, secret, dict(A, **{"X-Session-ID": "memo"}))
    ra = h.get("X-Saga-Replica")
    time.sleep(0.5)
    s1, h1, b1 = chat(P, secret, B)
    s2, h2, b2 = chat(P, other, B)
    hit, n = cached(b1)
    miss, n2 = cached(b2)
    print(
        f"alpha on {ra}; beta's guess on {h1.get('X-Saga-Replica')}: cached {hit}/{n}; beta's wrong guess on {h2.get('X-Saga-Replica')}: cached {miss}/{n2}"
    )
    if hit > miss + 100:
        print(
            f"DEFECT: tenant beta learns tenant alpha's prompt: its guess is answered with cached_tokens {hit}/{n} (a wrong guess {miss}), routed to alpha's replica"
        )
    else:
        print("OK: another tenant's prompt cache is not observable")
finally:
    stop_all()
