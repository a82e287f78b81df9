"""The cost model against WORKLOADS.md's worked checks (within 15% for now), directly and via the engine."""

from __future__ import annotations

import random

import pytest

from simulator.cost_model import PROFILES, Profile, get_profile, prefill_attention_pairs, step_time_s
from simulator.engine import Engine, EngineRequest

H100 = PROFILES["llama3-8b-h100"]


def _tokens(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(256, 32000) for _ in range(n)]


def _run(engine: Engine, now: float = 0.0) -> tuple[float, list[float]]:
    durations = []
    while engine.has_unfinished():
        result = engine.step(now)
        durations.append(result.duration)
        now = result.end
    return now, durations


def test_appending_1k_tokens_to_a_cached_30k_prefix_takes_about_60_ms() -> None:
    seconds = step_time_s(H100, num_tokens=1000, attention_pairs=prefill_attention_pairs(1000, 30_000))
    assert seconds == pytest.approx(0.060, rel=0.15)


def test_decode_step_of_16_sequences_at_25k_context_takes_about_35_ms() -> None:
    assert step_time_s(H100, num_tokens=16, decode_context_tokens=16 * 25_000) == pytest.approx(
        0.035, rel=0.15
    )


def test_an_empty_step_takes_no_time_and_more_work_takes_longer() -> None:
    assert step_time_s(H100, num_tokens=0) == 0.0
    assert step_time_s(H100, num_tokens=1) == pytest.approx(0.0076)
    assert (
        step_time_s(H100, num_tokens=4096)
        > step_time_s(H100, num_tokens=1024)
        > step_time_s(H100, num_tokens=1)
    )


def test_engine_cold_30k_prefill_takes_about_1_2_s_then_1k_append_about_60_ms() -> None:
    engine = Engine(H100)
    prefix = _tokens(30_000, 1)
    engine.add_request(EngineRequest(request_id="cold", prompt_token_ids=prefix, max_tokens=1), 0.0)
    now, durations = _run(engine)
    assert len(durations) == 4  # 30k tokens in chunks of the 8192-token budget
    assert sum(durations) == pytest.approx(1.2, rel=0.15)
    engine.add_request(
        EngineRequest(request_id="warm", prompt_token_ids=prefix + _tokens(1000, 2), max_tokens=1), now
    )
    result = engine.step(now)
    assert result.outputs[0].usage is not None and result.outputs[0].usage.cached_tokens == 30_000
    assert result.duration == pytest.approx(0.060, rel=0.15)


def test_engine_decode_step_with_16_sequences_of_25k_context_takes_about_35_ms() -> None:
    engine = Engine(H100)
    prompt = _tokens(25_000, 3)  # shared, so after the first prefill the others are nearly all cache hits
    for i in range(16):
        engine.add_request(
            EngineRequest(request_id=f"r{i}", prompt_token_ids=prompt, max_tokens=4, ignore_eos=True), 0.0
        )
    now = 0.0
    full_decode_steps = []
    while engine.has_unfinished():
        result = engine.step(now)
        now = result.end
        if result.num_decode_seqs == 16 and result.num_prefill_tokens == 0:
            full_decode_steps.append(result.duration)
    assert full_decode_steps
    assert all(d == pytest.approx(0.035, rel=0.15) for d in full_decode_steps)


def test_profiles_are_consistent_and_unknown_ones_are_named() -> None:
    for name, profile in PROFILES.items():
        assert profile.name == name and profile.source
        profile.validate()
    assert get_profile("tiny-cpu").block_size == 128
    assert H100.block_size == 16 and 400_000 <= H100.kv_capacity_tokens <= 460_000
    with pytest.raises(ValueError, match="llama3-8b-h100"):
        get_profile("nope")
    bad = Profile(
        name="bad",
        source="test",
        kv_capacity_tokens=1024,
        max_model_len=4096,
        step_fixed_ms=1,
        prefill_token_ms=0,
        prefill_attention_ms=0,
        decode_ms_per_kctx=0,
    )
    with pytest.raises(ValueError, match="max_model_len"):
        Engine(bad)
