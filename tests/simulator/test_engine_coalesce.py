"""Coalesced decoding (`Engine(coalesce_decode=True)`) gives exactly the step-by-step engine's run."""

from __future__ import annotations

import math
import random
from array import array

import msgspec
import pytest

from simulator.cost_model import PROFILES, Profile, step_time_s
from simulator.decode_run import DecodeRun
from simulator.engine import Engine, EngineRequest, StepResult
from simulator.request_state import RequestState

# 24 blocks of 4 tokens, at most 6 sequences: long decodes cross many block boundaries, memory runs short
PROFILE = Profile(
    name="coalesce-test",
    source="tests",
    block_size=4,
    kv_capacity_tokens=96,
    max_num_batched_tokens=24,
    max_num_seqs=6,
    max_model_len=64,
    step_fixed_ms=1.0,
    prefill_token_ms=0.01,
    linear_knee_tokens=0,
    prefill_attention_ms=0.001,
    decode_ms_per_kctx=0.1,
)


def script(seed: int, policy: str) -> list[tuple[str, object]]:
    """A random load: requests sharing prefixes (some with a session retention), aborts, idle gaps."""
    rng = random.Random(seed)
    prefixes = [[rng.randrange(256, 32000) for _ in range(16)] for _ in range(3)]
    actions: list[tuple[str, object]] = []
    for i in range(50):
        prompt = rng.choice(prefixes)[: rng.randrange(1, 17)] + [
            rng.randrange(256, 32000) for _ in range(rng.randrange(0, 12))
        ]
        session = f"s{rng.randrange(6)}" if rng.random() < 0.6 else None
        request = EngineRequest(
            request_id=f"r{i}",
            prompt_token_ids=prompt,
            max_tokens=rng.randrange(1, 64 - len(prompt) + 1),
            ignore_eos=rng.random() < 0.7,
            priority=rng.randrange(3) if policy == "priority" else 0,
            session_id=session,
            retain_ttl_s=rng.choice([0.01, 0.05, 1.0]) if session and rng.random() < 0.7 else None,
        )
        actions.append(("add", request))
        actions.append(("steps", rng.choice([0, 1, 3, 10, 40])))
        if rng.random() < 0.08:
            actions.append(("abort", f"r{rng.randrange(i + 1)}"))
        if rng.random() < 0.1:
            actions.append(("idle", rng.random() * 0.05))
    return actions


def play(engine: Engine, actions: list[tuple[str, object]]) -> tuple[list[object], dict[str, list[int]]]:
    """Every step's timing and counts, every request's event (first token, finish) with its time, and the
    tokens each request got, in order."""
    log: list[object] = []
    tokens: dict[str, list[int]] = {}
    now = 0.0

    def step() -> None:
        nonlocal now
        result: StepResult = engine.step(now)
        now = result.end
        log.append((result.start, result.duration, result.num_prefill_tokens, result.num_decode_seqs))
        log.append(result.num_preempted)
        for out in result.outputs:
            tokens.setdefault(out.request_id, []).extend(out.new_token_ids)
            if out.first_token or out.finish_reason is not None:
                log.append((out.request_id, now, out.first_token, out.finish_reason))
                log.append((out.arrival_time, out.first_scheduled_time, msgspec.to_builtins(out.usage)))
        engine.pool.check_invariants(engine.held_blocks())

    for kind, arg in actions:
        if kind == "add":
            assert isinstance(arg, EngineRequest)
            engine.add_request(arg, now)
        elif kind == "steps":
            assert isinstance(arg, int)
            for _ in range(arg):
                if engine.has_unfinished():
                    step()
        elif kind == "abort":
            assert isinstance(arg, str)
            log.append(("abort", arg, engine.abort(arg)))
        else:
            assert isinstance(arg, float)
            now += arg
            log.append(("expired", engine.expire_retentions(now)))
    while engine.has_unfinished():
        step()
    return log, tokens


@pytest.mark.parametrize("policy", ["fcfs", "priority"])
@pytest.mark.parametrize("seed", range(6))
def test_coalesced_decoding_is_step_for_step_identical(policy: str, seed: int) -> None:
    actions = script(seed, policy)
    plain = Engine(PROFILE, scheduling_policy=policy, hash_algo="builtin")
    coalesced = Engine(PROFILE, scheduling_policy=policy, hash_algo="builtin", coalesce_decode=True)
    plain_log, plain_tokens = play(plain, actions)
    coalesced_log, coalesced_tokens = play(coalesced, actions)
    assert coalesced_log == plain_log
    assert coalesced_tokens == plain_tokens
    assert msgspec.to_builtins(coalesced.stats()) == msgspec.to_builtins(plain.stats())
    assert plain.quiet_steps == 0 and coalesced.quiet_steps > len(plain_log) // 8  # it did coalesce
    assert plain.num_preemptions > 0 or seed % 2  # memory ran short in most runs


@pytest.mark.parametrize("seed", range(3))
def test_array_prompts_plan_and_decode_exactly_as_list_prompts(seed: int) -> None:
    # a 64-bit array prompt (the discrete-event clients') makes the engine keep its plan as an array too,
    # so a decode run copies buffers; what it emits must not change, and outputs stay lists
    actions = script(seed, "fcfs")
    as_arrays: list[tuple[str, object]] = [
        (kind, msgspec.structs.replace(arg, prompt_token_ids=array("q", arg.prompt_token_ids)))
        if isinstance(arg, EngineRequest)
        else (kind, arg)
        for kind, arg in actions
    ]
    plain = Engine(PROFILE, hash_algo="builtin")
    arrays = Engine(PROFILE, hash_algo="builtin", coalesce_decode=True)
    plain_log, plain_tokens = play(plain, actions)
    arrays_log, arrays_tokens = play(arrays, as_arrays)
    assert arrays_log == plain_log and arrays_tokens == plain_tokens
    assert arrays.quiet_steps > 0

    engine = Engine(PROFILE, hash_algo="builtin", coalesce_decode=True)
    engine.add_request(
        EngineRequest(request_id="a", prompt_token_ids=array("q", [300] * 5), max_tokens=20, ignore_eos=True),
        0.0,
    )
    engine.add_request(
        EngineRequest(request_id="b", prompt_token_ids=[300] * 5, max_tokens=20, ignore_eos=True), 0.0
    )
    assert isinstance(engine._seqs["a"].plan, array) and isinstance(engine._seqs["b"].plan, list)
    assert list(engine._seqs["a"].plan) == engine._seqs["b"].plan
    now, emitted = 0.0, []
    while engine.has_unfinished():
        result = engine.step(now)
        now = result.end
        emitted += [type(o.new_token_ids) for o in result.outputs]
    assert emitted and set(emitted) == {list}


def test_a_quiet_step_returns_no_outputs_and_the_next_ordinary_step_returns_them_all() -> None:
    engine = Engine(PROFILE, hash_algo="builtin", coalesce_decode=True)
    request = EngineRequest(request_id="a", prompt_token_ids=[300] * 5, max_tokens=20, ignore_eos=True)
    engine.add_request(request, 0.0)
    first = engine.step(0.0)
    assert [o.new_token_ids for o in first.outputs] == [first.outputs[0].new_token_ids]  # the first token
    now = first.end
    quiet = 0
    while True:
        result = engine.step(now)
        now = result.end
        if result.outputs:
            break
        quiet += 1
    assert quiet == 18  # every step but the first and the last
    deferred, last = result.outputs  # the quiet steps' tokens, then the last step's
    assert len(deferred.new_token_ids) == quiet and not deferred.first_token
    assert deferred.finish_reason is None
    assert last.finish_reason == "length" and len(last.new_token_ids) == 1
    assert last.usage is not None and last.usage.completion_tokens == 20
    assert engine.quiet_steps == quiet


def decoding_state(i: int, *, num_computed: int, num_blocks: int) -> RequestState:
    """A request one token into its decode, with `num_computed` tokens in KV over `num_blocks` blocks."""
    seq = RequestState(EngineRequest(request_id=f"r{i}", prompt_token_ids=[0]), 0.0, i, [0] * 5000, "length")
    seq.num_output = 1
    seq.num_computed = num_computed
    seq.block_ids = array("q", [0] * num_blocks)
    seq.num_cached_blocks = 0
    return seq


@pytest.mark.parametrize("profile_name", sorted(PROFILES))
def test_a_decode_run_times_its_steps_bit_for_bit_as_the_cost_model(profile_name: str) -> None:
    # DecodeRun splits step_time_s into a part fixed for the run and the context term; the split must not
    # change a single bit, or coalesced runs would drift from step-by-step ones.
    profile = PROFILES[profile_name]
    rng = random.Random(profile_name)
    for num_seqs in sorted(
        {1, 2, 7, max(1, profile.linear_knee_tokens), profile.linear_knee_tokens + 3, 300}
    ):
        seqs = [
            decoding_state(i, num_computed=rng.randrange(1, 120_000), num_blocks=8000)
            for i in range(num_seqs)
        ]
        run = DecodeRun(seqs, profile.block_size, math.inf, profile)
        for steps_done in (0, 1, 17, 4000):
            run.steps_done = steps_done
            expected = step_time_s(profile, num_tokens=num_seqs, decode_context_tokens=run.decode_context)
            assert run.step_duration() == expected
