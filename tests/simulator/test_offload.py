"""The CPU KV offload tier (simulator.offload) alone, and in the engine in virtual time."""

from __future__ import annotations

import random

import msgspec
import pytest

from simulator.cost_model import Profile, step_time_s
from simulator.engine import Engine, EngineRequest, RequestOutput, StepResult
from simulator.offload import GIB, CpuOffloadTier, cpu_blocks_for

MS = 1e-3
BLOCK_BYTES = 1 << 24  # 16 MiB a block: 1 GiB buys 64 CPU blocks
LINK = BLOCK_BYTES / MS  # one block per millisecond each way

# 16 GPU blocks of 4 tokens; prefill at 1 ms a token makes recomputing dear, loading (1 ms a block) cheap
SMALL = Profile(
    name="small-offload",
    source="tests",
    block_size=4,
    kv_capacity_tokens=64,
    max_num_batched_tokens=64,
    max_num_seqs=8,
    max_model_len=48,
    step_fixed_ms=1.0,
    prefill_token_ms=1.0,
    linear_knee_tokens=0,
    prefill_attention_ms=0.0,
    decode_ms_per_kctx=0.0,
    kv_bytes_per_token=BLOCK_BYTES // 4,
    host_link_gb_per_s=LINK / 1e9,
)


def tier(num_blocks: int) -> CpuOffloadTier:
    return CpuOffloadTier(num_blocks, bytes_per_block=BLOCK_BYTES, link_bytes_per_s=LINK)


# ---- the tier alone ------------------------------------------------------------------------------------


def test_pool_size_from_gib_and_bytes_per_block() -> None:
    assert cpu_blocks_for(1, BLOCK_BYTES) == 64
    assert cpu_blocks_for(0.5, 2 * 1024 * 1024) == GIB // 2 // (2 * 1024 * 1024)
    with pytest.raises(ValueError, match="positive GiB"):
        cpu_blocks_for(0, BLOCK_BYTES)
    with pytest.raises(ValueError, match="bytes per KV block"):
        cpu_blocks_for(1, 0)


def test_lru_eviction_refresh_on_offer_and_capacity() -> None:
    t = tier(3)
    assert t.offer([1, 2, 3], at=0.0) == 3
    assert t.offer([1], at=0.0) == 0  # present: refreshed, not stored again
    assert t.offer([4], at=0.0) == 1  # full: evicts the least recently used, 2
    assert [h in t for h in (1, 2, 3, 4)] == [True, False, True, True]
    assert t.num_used == 3 and t.usage == 1.0
    assert (t.blocks_stored, t.blocks_evicted) == (4, 1)
    assert t.lookup([1, 3, 4, 2, 1]) == 3  # stops at the first miss
    t.check_invariants()


def test_blocks_being_loaded_are_not_evicted() -> None:
    t = tier(2)
    t.offer([1, 2], at=0.0)
    done = t.load([1, 2], now=10 * MS)
    assert t.offer([3], at=10 * MS) == 0 and t.stores_skipped == 1  # every block is being read
    t.check_invariants()
    t.release(done - MS / 2)
    assert t.offer([3], at=10 * MS) == 0  # not done yet
    t.release(done)
    assert t.next_load_done() is None
    assert t.offer([3], at=done) == 1 and 1 not in t and 2 in t
    t.check_invariants()


def test_transfers_are_serialized_per_direction_and_loads_wait_for_stores() -> None:
    t = tier(8)
    t.offer([1, 2], at=0.0)  # stored over [0, 2 ms]
    t.offer([3], at=MS / 2)  # queued behind them: [2 ms, 3 ms]
    assert t.load([1], now=0.0) == pytest.approx(2 * MS)  # block 1 is ready at 1 ms, the load takes 1 ms
    assert t.load([3], now=0.0) == pytest.approx(4 * MS)  # after its store (3 ms) and the first load
    assert t.load([2], now=10 * MS) == pytest.approx(11 * MS)  # an idle link starts at once
    assert t.next_load_done() == pytest.approx(2 * MS)
    assert t.blocks_loaded == 3


# ---- in the engine -------------------------------------------------------------------------------------


def tokens(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(256, 32000) for _ in range(n)]


def req(rid: str, prompt: list[int], max_tokens: int = 1) -> EngineRequest:
    return EngineRequest(request_id=rid, prompt_token_ids=prompt, max_tokens=max_tokens, ignore_eos=True)


class Run:
    """Steps an engine as a driver does: back to back while busy, sleeping until the next load is done when
    a step scheduled nothing; checks both pools after every step."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.now = 0.0
        self.first_token_at: dict[str, float] = {}
        self.outputs: dict[str, list[RequestOutput]] = {}

    def step(self) -> StepResult:
        engine = self.engine
        result = engine.step(self.now)
        self.now = result.end
        if result.duration == 0 and result.num_preempted == 0:
            wake = engine.next_event_time()
            assert wake is not None, "an empty step with nothing to wait for"
            assert wake > self.now
            self.now = wake
        for out in result.outputs:
            self.outputs.setdefault(out.request_id, []).append(out)
            if out.first_token:
                self.first_token_at[out.request_id] = result.end
        engine.pool.check_invariants(engine.held_blocks())
        if engine.offload is not None:
            engine.offload.check_invariants()
        return result

    def until_done(self, max_steps: int = 10_000) -> Run:
        for _ in range(max_steps):
            if not self.engine.has_unfinished():
                return self
            self.step()
        raise AssertionError("engine did not finish")

    def one(self, request: EngineRequest) -> float:
        """Run `request` alone to its end; returns its time to first token."""
        start = self.now
        self.engine.add_request(request, start)
        self.until_done()
        return self.first_token_at[request.request_id] - start


def evicted_then_again(kv_offload_gib: float | None) -> tuple[Run, float]:
    """Prompt A, then two other prompts that evict it from the GPU, then A again: A's second TTFT."""
    run = Run(Engine(SMALL, kv_offload_gib=kv_offload_gib))
    a = tokens(40, 1)
    run.one(req("a1", a))
    run.one(req("b", tokens(40, 2)))
    run.one(req("c", tokens(40, 3)))
    assert run.engine.probe_prefix(a) == 0  # gone from the GPU
    return run, run.one(req("a2", a))


def test_gpu_miss_that_hits_in_cpu_costs_the_load_not_the_recompute() -> None:
    plain, ttft_plain = evicted_then_again(None)
    run, ttft = evicted_then_again(1.0)
    # without offload: the whole 40-token prompt again in one step
    assert ttft_plain == pytest.approx(step_time_s(SMALL, num_tokens=40))
    # with it: 9 blocks (36 tokens, the last token is always computed) load at 1 ms a block while nothing
    # else runs, then one step computes the 4 tokens left
    assert ttft == pytest.approx(9 * MS + step_time_s(SMALL, num_tokens=4))
    usage = run.outputs["a2"][-1].usage
    assert usage is not None and usage.cached_tokens == 36  # loaded tokens count as cached, as in vLLM
    plain_usage = plain.outputs["a2"][-1].usage
    assert plain_usage is not None and plain_usage.cached_tokens == 0
    s, p = run.engine.stats(), plain.engine.stats()
    assert s.offload_loaded_tokens_total == 36
    assert s.offload_stored_tokens_total == 3 * 40  # the prompt blocks of a1, b and c, each stored once
    assert s.num_cpu_blocks == 64 and s.cpu_kv_usage == pytest.approx(30 / 64)
    assert p.prefill_tokens_total - s.prefill_tokens_total == 36
    assert s.prefix_cache_hits_total == p.prefix_cache_hits_total == 0  # the GPU prefix cache missed both
    assert s.blocks_reused_total - p.blocks_reused_total == 9  # loaded blocks count as useful KV
    assert (p.offload_loaded_tokens_total, p.num_cpu_blocks) == (0, 0)


def test_a_request_waiting_for_its_load_does_not_hold_up_others() -> None:
    run = Run(Engine(SMALL, kv_offload_gib=1.0))
    a = tokens(40, 1)
    run.one(req("a1", a))
    run.one(req("b", tokens(40, 2)))
    run.one(req("c", tokens(40, 3)))
    start = run.now
    run.engine.add_request(req("a2", a), start)
    run.engine.add_request(req("d", tokens(8, 4)), start)
    first = run.step()  # a2 starts loading, d is admitted behind it and computed
    assert [o.request_id for o in first.outputs] == ["d"]
    assert run.engine.stats().num_loading == 1
    assert run.engine.next_event_time() == pytest.approx(start + 9 * MS)
    run.until_done()
    assert run.first_token_at["a2"] >= start + 9 * MS


def test_preempted_requests_come_back_from_cpu_instead_of_recomputing() -> None:
    def run_with(gib: float | None) -> Run:
        engine = Engine(SMALL, kv_offload_gib=gib)
        for i in range(3):  # 3 x (24 + 20) tokens do not fit in 64: preemption
            engine.add_request(req(f"r{i}", tokens(24, 10 + i), max_tokens=20), 0.0)
        return Run(engine).until_done()

    plain, run = run_with(None), run_with(1.0)
    s, p = run.engine.stats(), plain.engine.stats()
    assert p.num_preemptions_total > 0 and s.num_preemptions_total > 0
    assert s.offload_loaded_tokens_total > 0
    assert s.prefill_tokens_recomputed_total < p.prefill_tokens_recomputed_total
    for rid in ("r0", "r1", "r2"):
        assert len(run.outputs[rid]) == len(plain.outputs[rid]) == 20
        assert [o.new_token_ids for o in run.outputs[rid]] == [o.new_token_ids for o in plain.outputs[rid]]


def test_abort_while_loading_frees_the_blocks() -> None:
    run = Run(Engine(SMALL, kv_offload_gib=1.0))
    a = tokens(40, 1)
    run.one(req("a1", a))
    run.one(req("b", tokens(40, 2)))
    run.one(req("c", tokens(40, 3)))
    run.engine.add_request(req("a2", a), run.now)
    run.step()
    assert run.engine.stats().num_loading == 1
    assert run.engine.abort("a2")
    assert not run.engine.has_unfinished() and run.engine.pool.num_free == run.engine.pool.num_blocks
    run.engine.pool.check_invariants(run.engine.held_blocks())
    assert run.engine.reset_prefix_cache()


def test_random_traffic_finishes_with_consistent_pools() -> None:
    rng = random.Random(7)
    prefixes = [tokens(rng.randrange(8, 30), 100 + i) for i in range(4)]
    engine = Engine(SMALL, kv_offload_gib=0.1)  # 6 CPU blocks: the CPU pool evicts too
    run = Run(engine)
    expected: dict[str, int] = {}
    for i in range(60):
        prompt = rng.choice(prefixes) + tokens(rng.randrange(1, 12), 1000 + i)
        n = rng.randrange(1, 8)
        expected[f"q{i}"] = n
        engine.add_request(req(f"q{i}", prompt, max_tokens=n), run.now)
        for _ in range(rng.randrange(0, 4)):
            if engine.has_unfinished():
                run.step()
    run.until_done()
    assert {rid: len(outs) for rid, outs in run.outputs.items()} == expected
    s = engine.stats()
    assert s.offload_stored_tokens_total > 0 and s.offload_evicted_blocks_total > 0
    assert s.offload_loaded_tokens_total > 0
    assert engine.next_event_time() is None


def test_offload_needs_the_profile_to_say_kv_bytes_and_link() -> None:
    bare = msgspec.structs.replace(SMALL, kv_bytes_per_token=0)
    with pytest.raises(ValueError, match="kv_bytes_per_token"):
        Engine(bare, kv_offload_gib=1.0)
    assert Engine(bare).offload is None
    stats = Engine(SMALL).stats()
    assert (stats.num_cpu_blocks, stats.offload_stored_tokens_total, stats.num_loading) == (0, 0, 0)


def random_run(skip_blocked: bool, monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, int, int, int]]:
    if not skip_blocked:  # retry every blocked admission in full, every step
        monkeypatch.setattr(Engine, "_still_blocked", lambda self, seq, budget: False)
    rng = random.Random(11)
    prefixes = [tokens(rng.randrange(20, 40), 200 + i) for i in range(5)]
    engine = Engine(SMALL, kv_offload_gib=0.2)
    run = Run(engine)
    trace: list[tuple[float, int, int, int]] = []
    for i in range(80):
        engine.add_request(
            req(f"q{i}", rng.choice(prefixes) + tokens(4, i), max_tokens=rng.randrange(1, 6)), run.now
        )
        for _ in range(rng.randrange(0, 3)):
            if engine.has_unfinished():
                r = run.step()
                trace.append((r.start, r.num_prefill_tokens, r.num_decode_seqs, len(r.outputs)))
    while engine.has_unfinished():
        r = run.step()
        trace.append((r.start, r.num_prefill_tokens, r.num_decode_seqs, len(r.outputs)))
    assert engine.stats().offload_loaded_tokens_total > 0
    return trace


def test_skipping_blocked_admissions_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = random_run(True, monkeypatch)
    assert fast == random_run(False, monkeypatch)


@pytest.mark.parametrize("gib", [0.0, -1.0, float("inf"), float("nan")])
def test_offload_size_must_be_positive_and_finite(gib: float) -> None:
    with pytest.raises(ValueError, match="GiB"):
        cpu_blocks_for(gib, 1024)


def test_the_cpu_tier_shows_in_cache_config_info_as_vllm_writes_it() -> None:
    from prometheus_client import generate_latest

    from proxy.health import parse_load
    from simulator.metrics import ReplicaMetrics

    def scraped(engine: Engine) -> str:
        return generate_latest(ReplicaMetrics(engine, model_name="m").registry).decode()

    with_tier, without = scraped(Engine(SMALL, kv_offload_gib=1.0)), scraped(Engine(SMALL))
    assert 'kv_offloading_size="1"' in with_tier and 'kv_offloading_size="None"' in without
    # and the proxy reads it back as a CPU tier, or none
    assert parse_load(with_tier)["cpu_kv_tier"] == 1.0 and parse_load(without)["cpu_kv_tier"] == 0.0
