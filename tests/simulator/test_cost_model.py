"""The cost model against WORKLOADS.md's worked checks, directly and via the engine: exact in simulated time
(the expected value computed by hand from the profile's coefficients) and within 10% of WORKLOADS.md's figure;
sanity of the other profiles, and the `saga` CLI's --profile flag."""

from __future__ import annotations

import random

import pytest

from proxy.cli import build_parser
from simulator.cost_model import PROFILES, Profile, get_profile, prefill_attention_pairs, step_time_s
from simulator.engine import Engine, EngineRequest

H100 = PROFILES["llama3-8b-h100"]
L70_H100 = PROFILES["llama3-70b-tp4-h100"]
L70_A100 = PROFILES["llama3-70b-tp4-a100"]
QWEN7 = PROFILES["qwen2.5-7b-h100"]
EXACT = 1e-12  # float rounding only


def expected_ms(
    p: Profile, *, new: int, context: int = 0, decode_context: int = 0, decoding: int = 0
) -> float:
    """One step by hand: `new` prefill tokens after `context` cached ones, plus `decoding` sequences of
    `decode_context` tokens in all (WORKLOADS.md's step model, written out independently of step_time_s)."""
    tokens = new + decoding
    return (
        p.step_fixed_ms
        + p.prefill_token_ms * max(0, tokens - p.linear_knee_tokens)
        + p.prefill_attention_ms * new * (context + new / 2)
        + p.decode_ms_per_kctx * decode_context / 1000
    )


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
    expected = expected_ms(H100, new=1000, context=30_000)  # 7.6 + 0.022 x 872 + 1.2e-6 x 1000 x 30500
    assert expected == pytest.approx(63.384, rel=EXACT)
    assert seconds == pytest.approx(expected / 1000, rel=EXACT)
    assert seconds == pytest.approx(0.060, rel=0.10)


def test_decode_step_of_16_sequences_at_25k_context_takes_about_35_ms() -> None:
    seconds = step_time_s(H100, num_tokens=16, decode_context_tokens=16 * 25_000)
    assert seconds == pytest.approx(
        expected_ms(H100, new=0, decoding=16, decode_context=16 * 25_000) / 1000, rel=EXACT
    )
    assert seconds == pytest.approx(0.0356, rel=EXACT)  # 7.6 + 0.07 x 400
    assert seconds == pytest.approx(0.035, rel=0.10)


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
    chunks = [(8192, 0), (8192, 8192), (8192, 16_384), (5424, 24_576)]  # the 8192-token budget
    assert durations == pytest.approx(
        [expected_ms(H100, new=n, context=c) / 1000 for n, c in chunks], rel=EXACT
    )
    assert now == pytest.approx(sum(durations), rel=EXACT)
    assert sum(durations) == pytest.approx(1.2, rel=0.10)
    engine.add_request(
        EngineRequest(request_id="warm", prompt_token_ids=prefix + _tokens(1000, 2), max_tokens=1), now
    )
    result = engine.step(now)
    assert result.outputs[0].usage is not None and result.outputs[0].usage.cached_tokens == 30_000
    assert result.duration == pytest.approx(expected_ms(H100, new=1000, context=30_000) / 1000, rel=EXACT)
    assert result.duration == pytest.approx(0.060, rel=0.10)


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
    # max_tokens=4: the first token ends the prefill, then 3 decode steps at contexts 25001, 25002, 25003
    expected = [
        expected_ms(H100, new=0, decoding=16, decode_context=16 * (25_001 + k)) / 1000 for k in range(3)
    ]
    assert full_decode_steps == pytest.approx(expected, rel=EXACT)
    assert all(d == pytest.approx(0.035, rel=0.10) for d in full_decode_steps)


def test_profiles_are_consistent_and_unknown_ones_are_named() -> None:
    for name, profile in PROFILES.items():
        assert profile.name == name and profile.source
        profile.validate()
    assert get_profile("tiny-cpu").block_size == 128
    assert H100.block_size == 16 and 400_000 <= H100.kv_capacity_tokens <= 460_000
    with pytest.raises(ValueError, match="llama3-8b-h100") as error:
        get_profile("nope")
    assert all(name in str(error.value) for name in PROFILES)
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


def test_kv_capacities_follow_memory_minus_weights_over_kv_bytes_per_token() -> None:
    # (4 x 80 GB x 0.9 - 140 GB) / 320 KiB = 451,660 tokens, in whole blocks of 16
    assert L70_H100.kv_capacity_tokens == L70_A100.kv_capacity_tokens == 451_648
    assert QWEN7.kv_capacity_tokens == 989_984  # (80 GB x 0.9 - 15.23 GB) / 56 KiB
    assert QWEN7.kv_capacity_tokens > L70_H100.kv_capacity_tokens > H100.kv_capacity_tokens
    assert all(p.kv_capacity_tokens % p.block_size == 0 for p in PROFILES.values())


def test_70b_tp4_decode_step_of_16_sequences_at_25k_is_in_workloads_range() -> None:
    seconds = step_time_s(L70_H100, num_tokens=16, decode_context_tokens=16 * 25_000)
    # WORKLOADS.md: floor ~15 ms + all-reduce (~6 ms) + 45 ns x 400k context tokens = 18 ms
    assert seconds == pytest.approx((15.0 + 160 * 0.040 + 0.045 * 400) / 1000, rel=EXACT)
    assert 0.033 <= seconds <= 0.045


def test_70b_tp4_prefill_is_about_54_us_per_token_plus_all_reduce() -> None:
    # 4096 tokens: vidur's linear layers 227.8 ms + 160 all-reduces of 4096 tokens 0.318 ms each = 279 ms
    seconds = step_time_s(L70_H100, num_tokens=4096)
    assert seconds == pytest.approx(0.279, rel=0.05)


# (tokens in the step, prefill attention pairs, decode context tokens)
STEPS = [(1, 0.0, 0), (16, 0.0, 400_000), (1000, prefill_attention_pairs(1000, 30_000), 0), (8192, 0.0, 0)]


@pytest.mark.parametrize(("tokens", "pairs", "decode_context"), STEPS)
def test_a100_is_slower_than_h100_and_70b_slower_than_8b(
    tokens: int, pairs: float, decode_context: int
) -> None:
    a100, h100, small = (
        step_time_s(p, num_tokens=tokens, attention_pairs=pairs, decode_context_tokens=decode_context)
        for p in (L70_A100, L70_H100, H100)
    )
    assert a100 > h100 > small > 0
    assert 1.3 < a100 / h100 < 3.8  # between the bandwidth (1.64x) and compute (3.76x) ratios, roughly


@pytest.mark.parametrize(("tokens", "pairs", "decode_context"), STEPS)
def test_qwen_7b_is_a_little_cheaper_than_llama_8b_on_the_same_gpu(
    tokens: int, pairs: float, decode_context: int
) -> None:
    qwen, llama = (
        step_time_s(p, num_tokens=tokens, attention_pairs=pairs, decode_context_tokens=decode_context)
        for p in (QWEN7, H100)
    )
    assert 0.4 * llama < qwen < llama
    assert QWEN7.max_model_len == 32_768


def test_the_cli_profile_flag_lists_and_accepts_every_profile() -> None:
    parser = build_parser()
    for name in PROFILES:
        assert parser.parse_args(["sim", "--profile", name]).profile == name
        assert parser.parse_args(["serve", "--simulate", "2", "--profile", name]).profile == name
    with pytest.raises(SystemExit):
        parser.parse_args(["sim", "--profile", "gpt-5-on-a-toaster"])
