# ruff: noqa
import os, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get(
    "SAGA_ROOT",
    os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..")),
)
LOGS = tempfile.mkdtemp(prefix="saga-r15-")
import sys, random

sys.path.insert(0, ROOT)
import msgspec
from simulator.cost_model import get_profile, with_kv_capacity
from simulator.engine import Engine
from simulator.engine_types import EngineRequest

bad = []
for seed in range(6):
    for off in (None, 0.05):
        prof = with_kv_capacity(get_profile("llama3-8b-h100"), num_gpu_blocks=96)
        bs = prof.block_size
        prof = msgspec.structs.replace(prof, max_model_len=80 * bs, max_num_batched_tokens=48)
        eng = Engine(prof, scheduling_policy="priority", kv_offload_gib=off)
        rnd = random.Random(seed)
        now = 0.0
        live = []
        first = 0
        base = [rnd.randrange(1000, 30000) for _ in range(40 * bs)]
        for i in range(300):
            if rnd.random() < 0.15:
                L = rnd.randrange(bs, 40 * bs)
                shared = rnd.random() < 0.5
                toks = base[:L] if shared else [rnd.randrange(1000, 30000) for _ in range(L)]
                eng.add_request(
                    EngineRequest(
                        request_id=f"r{i}",
                        prompt_token_ids=toks,
                        max_tokens=rnd.randrange(1, 200),
                        ignore_eos=True,
                        priority=rnd.randrange(0, 5),
                    ),
                    now,
                )
                live.append(f"r{i}")
            if live and rnd.random() < 0.03:
                eng.abort(live.pop(rnd.randrange(len(live))))
            eng.step(now)
            now += 0.02
            s = eng.stats()
            if not (0 <= s.prefill_tokens_recomputed_total <= s.prefill_tokens_total):
                bad.append((seed, off, i, s.prefill_tokens_recomputed_total, s.prefill_tokens_total))
                break
        s = eng.stats()
        print(
            f"seed {seed} offload {off}: preemptions {s.num_preemptions_total} prefill {s.prefill_tokens_total} recomputed {s.prefill_tokens_recomputed_total}"
        )
        if s.num_preemptions_total == 0 and s.prefill_tokens_recomputed_total:
            bad.append(("recount without preemption", seed, off))
print(
    ("DEFECT: " + repr(bad))
    if bad
    else "OK: recount within [0, prefill] and 0 without preemptions, with offload and aborts"
)
