"""The engine in virtual time: prefix caching, eviction, preemption, priorities, chunked prefill, limits."""

from __future__ import annotations

import random

import msgspec
import pytest

from simulator.cost_model import Profile, get_profile, with_kv_capacity
from simulator.engine import Engine, EngineRequest, InvalidRequestError, RequestOutput, StepResult
from simulator.tokenizer import EOS_ID

# 16 blocks of 4 tokens, 32-token steps: small enough to reason about every block
SMALL = Profile(
    name="small",
    source="tests",
    block_size=4,
    kv_capacity_tokens=64,
    max_num_batched_tokens=32,
    max_num_seqs=8,
    max_model_len=48,
    step_fixed_ms=1.0,
    prefill_token_ms=0.01,
    linear_knee_tokens=0,
    prefill_attention_ms=0.0,
    decode_ms_per_kctx=0.1,
)


def tokens(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(256, 32000) for _ in range(n)]


def req(
    rid: str,
    prompt: list[int],
    max_tokens: int | None = 1,
    *,
    priority: int = 0,
    cache_salt: str | None = None,
) -> EngineRequest:
    return EngineRequest(
        request_id=rid,
        prompt_token_ids=prompt,
        max_tokens=max_tokens,
        ignore_eos=True,
        priority=priority,
        cache_salt=cache_salt,
    )


class Run:
    """Steps an engine to completion, collecting outputs and checking the pool after every step."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.now = 0.0
        self.steps: list[StepResult] = []
        self.outputs: dict[str, list[RequestOutput]] = {}
        self.finish_order: list[str] = []

    def step(self) -> StepResult:
        result = self.engine.step(self.now)
        self.now = result.end
        self.steps.append(result)
        for out in result.outputs:
            self.outputs.setdefault(out.request_id, []).append(out)
            if out.finish_reason is not None:
                self.finish_order.append(out.request_id)
        self.engine.pool.check_invariants(self.engine.held_blocks())
        return result

    def until_done(self, max_steps: int = 10_000) -> Run:
        for _ in range(max_steps):
            if not self.engine.has_unfinished():
                return self
            self.step()
        raise AssertionError("engine did not finish")

    def add(self, request: EngineRequest) -> Run:
        self.engine.add_request(request, self.now)
        return self

    def usage(self, rid: str) -> tuple[int, int, int]:
        last = self.outputs[rid][-1]
        assert last.usage is not None
        return last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.cached_tokens

    def token_ids(self, rid: str) -> list[int]:
        return [t for out in self.outputs[rid] for t in out.new_token_ids]


def test_a_repeated_prompt_hits_its_full_blocks_but_never_the_last_token() -> None:
    run = Run(Engine(SMALL))
    odd, even = tokens(22, 1), tokens(24, 2)
    run.add(req("a", odd)).add(req("b", even)).until_done()
    run.add(req("a2", odd)).add(req("b2", even)).until_done()
    assert run.usage("a")[2] == 0 and run.usage("b")[2] == 0
    assert run.usage("a2")[2] == 20  # 5 full blocks of 22 tokens
    assert run.usage("b2")[2] == 20  # 24 tokens fill 6 blocks, but the last token is always recomputed
    stats = run.engine.stats()
    assert stats.prefix_cache_queries_total == 2 * (22 + 24) and stats.prefix_cache_hits_total == 40


def test_freed_blocks_are_evicted_lru_when_capacity_runs_out() -> None:
    run = Run(Engine(SMALL))
    a, b, c = tokens(24, 1), tokens(24, 2), tokens(24, 3)
    run.add(req("a", a)).until_done()
    run.add(req("b", b)).until_done()
    assert run.engine.probe_prefix(a) == 20 and run.engine.probe_prefix(b) == 20
    run.add(req("c", c)).until_done()  # needs 6 of 16 blocks: 4 never used, then a's two tail blocks
    assert run.engine.probe_prefix(a) == 16
    assert run.engine.probe_prefix(b) == 20 and run.engine.probe_prefix(c) == 20
    assert run.engine.pool.num_evictions == 2


def test_output_blocks_are_cached_so_the_next_turn_reuses_prompt_and_answer() -> None:
    engine = Engine(SMALL)
    run = Run(engine)
    prompt = tokens(10, 4)
    run.add(
        EngineRequest(request_id="t1", prompt_token_ids=prompt, max_tokens=15, ignore_eos=True)
    ).until_done()
    answer = run.token_ids("t1")
    run.add(req("t2", prompt + answer + tokens(5, 5))).until_done()
    # every token but the last sampled one was computed, so (10 + 15 - 1) // 4 full blocks are cached
    assert run.usage("t2")[2] == (10 + 15 - 1) // 4 * 4


def test_cache_salt_isolates_prefixes() -> None:
    run = Run(Engine(SMALL))
    prompt = tokens(20, 6)
    run.add(req("a", prompt, cache_salt="tenant-a")).until_done()
    run.add(req("b", prompt, cache_salt="tenant-b")).until_done()
    run.add(req("plain", prompt)).until_done()
    run.add(req("a2", prompt, cache_salt="tenant-a")).until_done()
    assert [run.usage(r)[2] for r in ("a", "b", "plain", "a2")] == [0, 0, 0, 16]
    assert run.engine.probe_prefix(prompt, "tenant-b") == 16 and run.engine.probe_prefix(prompt, "other") == 0


def test_chunked_prefill_respects_the_token_budget() -> None:
    run = Run(Engine(SMALL))
    run.add(req("long", tokens(40, 7), max_tokens=3)).add(
        req("short", tokens(12, 8), max_tokens=3)
    ).until_done()
    for step in run.steps:
        assert step.num_prefill_tokens + step.num_decode_seqs <= SMALL.max_num_batched_tokens
    first_token_step = next(i for i, s in enumerate(run.steps) if any(o.first_token for o in s.outputs))
    assert run.steps[0].num_prefill_tokens == 32 and not run.steps[0].outputs  # 40 tokens need two steps
    assert first_token_step == 1
    assert run.usage("long") == (40, 3, 0) and run.usage("short") == (12, 3, 0)


def test_max_num_seqs_caps_the_batch() -> None:
    engine = Engine(Profile(**{**_fields(SMALL), "max_num_seqs": 2}))
    run = Run(engine)
    for i in range(5):
        run.add(req(f"r{i}", tokens(4, 10 + i), max_tokens=3))
    while engine.has_unfinished():
        run.step()
        assert engine.stats().num_running <= 2
    assert run.finish_order == [f"r{i}" for i in range(5)]


def test_running_out_of_kv_preempts_the_newest_request_which_recomputes_and_finishes() -> None:
    engine = Engine(SMALL)
    run = Run(engine)
    for i in range(3):  # each grows to 16 + 16 tokens = 8 blocks; three need 24 of 16 blocks
        run.add(
            EngineRequest(
                request_id=f"r{i}", prompt_token_ids=tokens(16, 20 + i), max_tokens=16, ignore_eos=True
            )
        )
    run.until_done()
    assert engine.stats().num_preemptions_total > 0
    assert run.finish_order[-1] == "r2"  # the newest was preempted, so it finishes last
    assert {rid: run.usage(rid)[:2] for rid in ("r0", "r1", "r2")} == {f"r{i}": (16, 16) for i in range(3)}
    alone = Run(Engine(SMALL))
    alone.add(EngineRequest(request_id="r2", prompt_token_ids=tokens(16, 22), max_tokens=16, ignore_eos=True))
    assert run.token_ids("r2") == alone.until_done().token_ids("r2")  # preemption does not change output
    assert engine.pool.usage == 0.0


def test_priority_policy_admits_by_priority_then_arrival_and_preempts_the_lowest_priority() -> None:
    engine = Engine(Profile(**{**_fields(SMALL), "max_num_seqs": 1}), scheduling_policy="priority")
    run = Run(engine)
    for rid, priority in [("p3", 3), ("p1", 1), ("p2a", 2), ("p2b", 2)]:
        run.add(req(rid, tokens(8, len(rid) + priority), max_tokens=2, priority=priority))
    run.until_done()
    assert run.finish_order == ["p1", "p2a", "p2b", "p3"]

    engine = Engine(SMALL, scheduling_policy="priority")
    run = Run(engine)
    run.add(req("low", tokens(16, 1), max_tokens=16, priority=5))
    run.step()  # "low" runs first and holds the oldest blocks
    run.add(req("high", tokens(16, 2), max_tokens=16, priority=0))
    run.add(req("mid", tokens(16, 3), max_tokens=16, priority=1))
    run.until_done()
    assert engine.stats().num_preemptions_total > 0
    assert (
        run.finish_order[-1] == "low"
    )  # the oldest request, but the lowest priority: it is the one preempted


def test_fcfs_serves_in_arrival_order_and_refuses_priorities() -> None:
    engine = Engine(Profile(**{**_fields(SMALL), "max_num_seqs": 1}))
    run = Run(engine)
    for rid in ["c", "a", "b"]:
        run.add(req(rid, tokens(8, ord(rid)), max_tokens=2))
    assert run.until_done().finish_order == ["c", "a", "b"]
    with pytest.raises(InvalidRequestError, match="Priority scheduling is not enabled"):
        engine.add_request(req("p", tokens(4, 1), priority=1), 0.0)


def test_requests_that_cannot_fit_the_context_are_rejected() -> None:
    engine = Engine(SMALL)
    with pytest.raises(InvalidRequestError, match="maximum context length is 48"):
        engine.add_request(req("long", tokens(49, 1), max_tokens=None), 0.0)
    with pytest.raises(InvalidRequestError, match="maximum context length is 48"):
        engine.add_request(req("sum", tokens(40, 1), max_tokens=9), 0.0)
    with pytest.raises(InvalidRequestError, match="empty"):
        engine.add_request(req("empty", []), 0.0)
    engine.add_request(req("fits", tokens(40, 1), max_tokens=8), 0.0)
    with pytest.raises(InvalidRequestError, match="already"):
        engine.add_request(req("fits", tokens(4, 1)), 0.0)
    assert not Engine(SMALL).has_unfinished()


def test_output_length_ignore_eos_min_tokens_and_natural_stop() -> None:
    big = Profile(**{**_fields(SMALL), "kv_capacity_tokens": 4096, "max_model_len": 2048, "block_size": 16})
    run = Run(Engine(big))
    prompt = tokens(30, 9)
    run.add(EngineRequest(request_id="natural", prompt_token_ids=prompt))
    run.add(EngineRequest(request_id="again", prompt_token_ids=prompt))
    run.add(EngineRequest(request_id="exact", prompt_token_ids=prompt, max_tokens=50, ignore_eos=True))
    run.add(EngineRequest(request_id="min", prompt_token_ids=tokens(30, 10), max_tokens=1000, min_tokens=900))
    run.add(EngineRequest(request_id="capped", prompt_token_ids=tokens(30, 11), max_tokens=5))
    run.until_done()
    natural = run.token_ids("natural")
    assert natural == run.token_ids("again") and 32 <= len(natural) < 32 * 2**4.5
    assert natural[-1] == EOS_ID and run.outputs["natural"][-1].finish_reason == "stop"
    assert run.usage("exact")[1] == 50 and run.outputs["exact"][-1].finish_reason == "length"
    assert 900 <= run.usage("min")[1] <= 1000
    assert run.usage("capped")[1] == 5 and run.outputs["capped"][-1].finish_reason == "length"
    assert sum(o.first_token for o in run.outputs["natural"]) == 1


def test_abort_frees_blocks_of_running_and_waiting_requests() -> None:
    engine = Engine(Profile(**{**_fields(SMALL), "max_num_seqs": 1}))
    run = Run(engine)
    run.add(req("running", tokens(20, 1), max_tokens=20)).add(req("waiting", tokens(20, 2)))
    run.step()
    assert engine.stats().num_running == 1 and engine.stats().num_waiting == 1 and engine.pool.usage > 0
    assert engine.abort("waiting") and engine.abort("running")
    assert not engine.abort("running") and not engine.has_unfinished()
    assert engine.pool.usage == 0.0
    engine.pool.check_invariants()


def test_reset_prefix_cache_forgets_everything_only_when_idle() -> None:
    engine = Engine(SMALL)
    run = Run(engine)
    prompt = tokens(20, 1)
    run.add(req("a", prompt)).until_done()
    run.add(req("b", tokens(8, 2), max_tokens=5)).step()
    assert engine.reset_prefix_cache() is False and engine.probe_prefix(prompt) == 16
    run.until_done()
    assert engine.reset_prefix_cache() is True and engine.probe_prefix(prompt) == 0


@pytest.mark.parametrize("policy", ["fcfs", "priority"])
@pytest.mark.parametrize("seed", range(4))
def test_random_load_keeps_the_pool_consistent_and_finishes_everything(policy: str, seed: int) -> None:
    rng = random.Random(seed)
    engine = Engine(SMALL, scheduling_policy=policy, hash_algo="builtin" if seed % 2 else "sha256")
    run = Run(engine)
    prefixes = [tokens(12, 100 + i) for i in range(3)]
    expected: dict[str, int] = {}
    aborted: set[str] = set()
    for i in range(60):
        prompt = rng.choice(prefixes)[: rng.randrange(1, 13)] + tokens(
            rng.randrange(0, 20), rng.randrange(10**6)
        )
        max_tokens = rng.randrange(1, 48 - len(prompt) + 1)
        priority = rng.randrange(3) if policy == "priority" else 0
        run.add(req(f"r{i}", prompt, max_tokens=max_tokens, priority=priority))
        expected[f"r{i}"] = max_tokens
        for _ in range(rng.randrange(3)):
            if engine.has_unfinished():
                run.step()
        victim = f"r{rng.randrange(i + 1)}"
        if rng.random() < 0.1 and engine.abort(victim):
            aborted.add(victim)
    run.until_done()
    assert engine.pool.usage == 0.0 and engine.stats().num_running == engine.stats().num_waiting == 0
    finished = set(run.finish_order)
    assert finished | aborted == set(expected) and not finished & aborted
    assert all(run.usage(r)[1] == expected[r] for r in finished)


def _fields(profile: Profile) -> dict[str, object]:
    return {f: getattr(profile, f) for f in profile.__struct_fields__}


def test_recomputation_is_counted_as_it_runs_not_when_a_preempted_request_is_readmitted() -> None:
    """The fourteenth review: counted at readmission (all it had computed past what it found), a request
    aborted after one chunk of its recomputation was counted for prefill never computed (320 tokens where
    32 were computed again). Counted as each prefill chunk runs below the most it had computed: exact."""

    prof = with_kv_capacity(get_profile("llama3-8b-h100"), num_gpu_blocks=129)
    bs = prof.block_size
    engine = Engine(
        msgspec.structs.replace(prof, max_model_len=128 * bs, max_num_batched_tokens=32),
        scheduling_policy="priority",
    )
    rnd = random.Random(1)
    clock = [0.0]

    def step() -> None:
        engine.step(clock[0])
        clock[0] += 0.02

    for rid, priority in (("victim", 10), ("hog", 0)):
        tokens = [rnd.randrange(1000, 30000) for _ in range(60 * bs)]
        engine.add_request(
            EngineRequest(
                request_id=rid, prompt_token_ids=tokens, max_tokens=1000, ignore_eos=True, priority=priority
            ),
            clock[0],
        )
    for _ in range(5000):
        step()
        if engine.stats().num_preemptions_total:
            break
    for _ in range(320):  # the hog writes on into the victim's freed blocks
        step()
    engine.abort("hog")
    for _ in range(50):  # until the victim is readmitted and has computed one chunk
        before = engine.stats().prefill_tokens_total
        step()
        if engine.stats().prefill_tokens_total > before:
            break
    engine.abort("victim")
    stats = engine.stats()
    computed_again = stats.prefill_tokens_total - 2 * 60 * bs  # beyond the two first prefills
    assert stats.num_preemptions_total and 0 < stats.prefill_tokens_recomputed_total <= computed_again
