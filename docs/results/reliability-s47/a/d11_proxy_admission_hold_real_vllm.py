# ruff: noqa
"""Companion of d10 on a REAL vLLM: the proxy (default `saga`) in front of the CPU vLLM started with
--num-gpu-blocks-override 33 (the KV size the simulator's tiny-cpu profile reports). Prints DEFECT when
a sequential one-shot call is held > 10 s by an idle replica, i.e. the hold is the proxy's admission, not
an artefact of the simulator; with the tests' default KV (4,096 blocks) no call is held (observed)."""

import sys, time

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
from common import MODEL, post, proxy, report
from real_vllm import running_vllm

with running_vllm(["--num-gpu-blocks-override", "33"]) as vp, proxy(vp) as pp:
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
            if time.time() - t > 10:
                problems.append(f"call {i}: {time.time() - t:.1f} s (status {st}) with the replica idle")
                break
        except TimeoutError:
            problems.append(f"call {i}: no answer within 12 s with the real vLLM idle")
            break
report(problems, "no one-shot call was held on an idle real vLLM")
