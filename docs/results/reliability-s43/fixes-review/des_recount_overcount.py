# ruff: noqa
"""The DES engine's `prefill_tokens_recomputed_total` (loadtests' per-replica `recomputed_prefill_tokens`) adds,
when a preempted request is readmitted, everything it had computed past the KV it finds, before computing any of
it. With chunked prefill a readmitted request that is aborted (or preempted again) after one chunk is counted for
prefill never computed: the count exceeds what was computed again, even all the prefill computed."""

import os, sys, random

ROOT = os.environ.get(
    "SAGA_ROOT",
    os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..")),
)
sys.path.insert(0, ROOT)
import msgspec
from simulator.cost_model import get_profile, with_kv_capacity
from simulator.engine import Engine
from simulator.engine_types import EngineRequest

prof = with_kv_capacity(get_profile("llama3-8b-h100"), num_gpu_blocks=129)
bs = prof.block_size
prof = msgspec.structs.replace(prof, max_model_len=128 * bs, max_num_batched_tokens=32)
eng = Engine(prof, scheduling_policy="priority")
rnd = random.Random(1)
now = 0.0


def add(rid, prio, length, out):
    eng.add_request(
        EngineRequest(
            request_id=rid,
            prompt_token_ids=[rnd.randrange(1000, 30000) for _ in range(length)],
            max_tokens=out,
            ignore_eos=True,
            priority=prio,
        ),
        now,
    )


def step():
    global now
    eng.step(now)
    now += 0.02


first = 0
add("victim", 10, 60 * bs, 1000)
first += 60 * bs
add("hog", 0, 60 * bs, 1000)
first += 60 * bs
for _ in range(5000):
    step()
    if eng.stats().num_preemptions_total:
        break
s = eng.stats()
print("preempted:", s.num_preemptions_total, "prefill so far", s.prefill_tokens_total)
for _ in range(320):  # the hog writes on into the victim's freed blocks (their cached hashes evicted)
    step()
eng.abort("hog")
for i in range(50):  # until the victim is readmitted and has computed one 32-token chunk
    before = eng.stats().prefill_tokens_total
    step()
    if eng.stats().prefill_tokens_total > before:
        break
eng.abort("victim")
s = eng.stats()
truly = s.prefill_tokens_total - first  # prefill computed beyond the two requests' first prefills
print(
    f"prefill computed {s.prefill_tokens_total}, of it beyond first prefills {truly}; counted as recomputed {s.prefill_tokens_recomputed_total}"
)
if s.prefill_tokens_recomputed_total > max(truly, 0):
    print(
        f"DEFECT: recomputed_prefill_tokens {s.prefill_tokens_recomputed_total} counts prefill never computed (only {truly} computed again; all prefill {s.prefill_tokens_total})"
    )
else:
    print("OK: the recount is no more than what was computed again")
