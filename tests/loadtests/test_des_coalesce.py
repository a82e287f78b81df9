"""Coalesced decoding changes nothing the cluster measures: a seeded run with it on and off is identical."""

from __future__ import annotations

import random
import sys
import zlib
from array import array

import msgspec

from loadtests.des.client import Conversation, random_token_ids
from loadtests.des.cluster import Cluster
from loadtests.des.fingerprint import SHORT_SWE, tight_config
from loadtests.des.result import ClusterConfig, ClusterResult
from loadtests.tasks import AgentTask
from loadtests.workloads.swe import swe_tasks
from loadtests.workloads.webarena import webarena_tasks
from simulator.engine_types import EngineRequest, prompt_checksum
from simulator.request_state import output_plan
from simulator.tokenizer import VOCAB_SIZE, Tokenizer


def run_both(tasks: list[AgentTask], config: ClusterConfig) -> tuple[ClusterResult, ClusterResult, int]:
    """The run step by step and coalesced, and how many steps the coalesced engines ran as quiet decode."""
    plain = Cluster(tasks, msgspec.structs.replace(config, coalesce_decode=False)).run()
    cluster = Cluster(tasks, msgspec.structs.replace(config, coalesce_decode=True))
    coalesced = cluster.run()
    quiet = sum(r.engine.quiet_steps for r in cluster.replicas.values())
    return plain, coalesced, quiet


def assert_identical(plain: ClusterResult, coalesced: ClusterResult) -> None:
    for one, two in zip(plain.tasks, coalesced.tasks, strict=True):
        for a, b in zip(one.calls, two.calls, strict=True):  # per call first, for a readable failure
            assert (a.ttft_s, a.latency_s, a.cached_tokens, a.completion_tokens, a.replica) == (
                b.ttft_s,
                b.latency_s,
                b.cached_tokens,
                b.completion_tokens,
                b.replica,
            )
    assert msgspec.to_builtins(plain.tasks) == msgspec.to_builtins(coalesced.tasks)
    assert msgspec.to_builtins(plain.replicas) == msgspec.to_builtins(coalesced.replicas)
    assert plain.duration_s == coalesced.duration_s and plain.events == coalesced.events
    assert plain.summary() == coalesced.summary()


def test_coalesced_decoding_gives_identical_results_under_memory_pressure_and_retention() -> None:
    # Sized so that, under retention contract v2, running requests still break retentions and preempt.
    tasks = swe_tasks(20, seed=3, params=SHORT_SWE)
    plain, coalesced, quiet = run_both(tasks, tight_config(policy="continuum-ttl", arrival_rate=1.0, seed=3))
    assert_identical(plain, coalesced)
    reps = plain.replicas
    assert sum(r.preemptions for r in reps) > 0
    assert sum(r.retentions_dropped for r in reps) > 0
    assert sum(r.prefix_cache_hits for r in reps) > 0
    assert all(not t.failed for t in plain.tasks)
    steps = sum(r.steps for r in reps)
    assert quiet > steps // 2  # most steps ran coalesced, so the comparison exercised it


def test_coalesced_decoding_gives_identical_results_with_plain_affinity_and_closed_loop() -> None:
    tasks = swe_tasks(8, seed=5, params=SHORT_SWE) + webarena_tasks(6, seed=5)
    plain, coalesced, quiet = run_both(tasks, tight_config(policy="session-affinity", concurrency=9, seed=5))
    assert_identical(plain, coalesced)
    assert sum(r.preemptions for r in plain.replicas) > 0
    assert quiet > sum(r.steps for r in plain.replicas) // 2


def test_a_conversation_keeps_the_checksum_of_its_tokens_as_it_grows_and_is_truncated() -> None:
    tokens = random_token_ids(random.Random(1), 1000)
    conv = Conversation(tokens[:300], (), 16)
    conv.extend(tokens[300:700])
    assert conv.checksum == prompt_checksum(tokens[:700])
    conv.truncate(123)
    assert conv.checksum == prompt_checksum(tokens[:123])
    conv.extend(tokens[123:])
    assert conv.checksum == prompt_checksum(tokens)
    assert prompt_checksum(tokens) == zlib.crc32(array("q", tokens).tobytes())
    assert prompt_checksum(list(tokens)) == prompt_checksum(tokens)  # a list and an array("q") agree


def test_random_token_ids_draw_what_the_list_based_version_drew() -> None:
    # the ids of the first implementation (one int object per id from a table): runs keep their results
    table = [256 + v % (VOCAB_SIZE - 256) for v in range(1 << 16)]
    for n in (0, 1, 2, 999):
        raw = array("H", random.Random(f"ids/{n}").randbytes(2 * n))
        if sys.byteorder == "big":
            raw.byteswap()
        ids = random_token_ids(random.Random(f"ids/{n}"), n)
        assert isinstance(ids, array) and ids.typecode == "q"
        assert ids.tolist() == [table[v] for v in raw]


def test_an_engine_plans_the_same_output_from_a_given_checksum_as_from_the_prompt() -> None:
    prompt = random_token_ids(random.Random(2), 500)
    given = EngineRequest(request_id="a", prompt_token_ids=prompt, prompt_checksum=prompt_checksum(prompt))
    computed = EngineRequest(request_id="a", prompt_token_ids=prompt)
    tokenizer = Tokenizer()
    assert output_plan(given, max_model_len=4096, tokenizer=tokenizer) == output_plan(
        computed, max_model_len=4096, tokenizer=tokenizer
    )
    other = EngineRequest(request_id="a", prompt_token_ids=prompt, prompt_checksum=12345)
    assert output_plan(other, max_model_len=4096, tokenizer=tokenizer) != output_plan(
        computed, max_model_len=4096, tokenizer=tokenizer
    )


def test_coalesced_decoding_gives_identical_results_with_cpu_offload() -> None:
    # A CPU tier: loads finish mid-run and their requests join the batch, which must end a quiet run.
    tasks = swe_tasks(20, seed=5, params=SHORT_SWE)
    config = tight_config(policy="session-affinity", arrival_rate=1.0, seed=5, kv_offload_gib=1.0)
    plain, coalesced, quiet = run_both(tasks, config)
    assert_identical(plain, coalesced)
    kv = plain.kv_figures()
    assert kv.offload_loaded_tokens > 0  # the comparison exercised loads
    assert quiet > sum(r.steps for r in plain.replicas) // 2
