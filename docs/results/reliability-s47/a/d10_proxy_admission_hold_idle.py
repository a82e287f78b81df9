# ruff: noqa
"""DEFECT check (proxy, default `saga` policy, in front of a simulated replica with the tiny-cpu profile, the
profile named after tests/real_vllm's CPU vLLM): identical one-shot chat calls, sent one after another
(nothing in flight, the replica idle, KV usage 0), each become a new inferred session whose admission
reserves ~1,000 tokens for up to max_hold_s (120 s). The tiny-cpu profile reports num_gpu_blocks=33
(4,224 tokens) where the real CPU vLLM with the tests' flags reports 4,096 blocks (524,288 tokens), so
after ~13 calls the next call is held for tens of seconds (observed 7-60+ s) by an idle replica.
In front of the real vLLM the same sequence is never held (all calls < 2 s, observed).
The script prints DEFECT when a call waits more than 10 s."""

import sys, time

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
from common import MODEL, post, proxy, report, sim

with sim() as sp, proxy(sp) as pp:
    problems = []
    for i in range(20):
        t = time.time()
        try:
            st, j, raw = post(
                pp,
                "/v1/chat/completions",
                {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
                timeout=12,
            )
            dt = time.time() - t
            if dt > 10:
                problems.append(f"call {i}: {dt:.1f} s (status {st}) with the replica idle")
                break
        except TimeoutError:
            problems.append(f"call {i}: no answer within 12 s with the replica idle (vLLM-fronted: < 2 s)")
            break
report(problems, "no one-shot call was held on an idle replica")
