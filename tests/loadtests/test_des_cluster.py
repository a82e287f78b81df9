"""The discrete-event cluster: engines behind the unchanged scheduler core, agents in virtual time."""

from __future__ import annotations

import random
import statistics
from array import array

import msgspec
import pytest

from fairness import TenantsConfig
from loadtests.des.client import Conversation, PromptSource, random_token_ids
from loadtests.des.cluster import Cluster, run_cluster
from loadtests.des.event_queue import EventQueue
from loadtests.des.result import ClusterConfig, ClusterProgress
from loadtests.tasks import AgentTask, Step
from loadtests.workloads.catalog import generate
from loadtests.workloads.distributions import LogNormal, ToolKind
from loadtests.workloads.swe import SweParams, swe_tasks
from loadtests.workloads.webarena import WebArenaParams, webarena_tasks
from proxy.scheduler import Decision, PolicySpec, Reject, RequestInfo, SchedulerCore, build_policy
from proxy.scheduler.registry import PluginSpec
from simulator.block_hash import BlockHash, hash_function, none_hash
from simulator.cost_model import PROFILES
from simulator.engine import Engine, EngineRequest, RequestOutput

# Short coding tasks (3k-5k first prompt, ~6 calls, sub-second tools, so LLM time counts): a run takes well
# under a second of wall time.
SMALL_SWE = SweParams(
    calls_per_task=LogNormal(6, 10, cap=10),
    max_context_tokens=40_000,
    tools=[ToolKind("bash", 1.0, LogNormal(0.2, 0.4))],
)


def small_swe(n: int, seed: int = 0) -> list[AgentTask]:
    return swe_tasks(n, seed=seed, params=SMALL_SWE)


def as_data(result: object) -> object:
    return msgspec.to_builtins(result)


# ---- event queue and conversations ---------------------------------------------------------------------


def test_event_queue_runs_in_time_order_fifo_on_ties_and_refuses_the_past() -> None:
    queue = EventQueue()
    seen: list[tuple[float, str]] = []

    def note(tag: str) -> None:
        seen.append((queue.now, tag))
        if tag == "a":
            queue.schedule(queue.now, note, "a-child")  # same instant: after what is already due then

    for at, tag in [(2.0, "c"), (1.0, "a"), (1.0, "b"), (0.5, "first")]:
        queue.schedule(at, note, tag)
    queue.run()
    assert seen == [(0.5, "first"), (1.0, "a"), (1.0, "b"), (1.0, "a-child"), (2.0, "c")]
    assert queue() == 2.0 and queue.events_run == 5
    with pytest.raises(ValueError, match="before now"):
        queue.schedule(1.0, note, "late")


def test_an_action_returning_a_time_runs_again_then_as_if_it_scheduled_itself_last() -> None:
    queue = EventQueue()
    seen: list[tuple[float, str]] = []

    def note(tag: str) -> None:
        seen.append((queue.now, tag))

    def repeat(tag: str) -> float | None:
        seen.append((queue.now, tag))
        if queue.now >= 2.0:
            return None
        queue.schedule(queue.now + 1.0, note, "scheduled-first")  # same time as the rerun: goes before it
        return queue.now + 1.0

    queue.schedule(1.0, repeat, "r")
    queue.schedule(2.0, note, "already-due")  # scheduled before the rerun: before it at the same time
    queue.run()
    assert seen == [
        (1.0, "r"),
        (2.0, "already-due"),
        (2.0, "scheduled-first"),
        (2.0, "r"),
    ]
    assert queue.events_run == 4

    late = EventQueue()

    def back(_: None) -> float:
        return late.now - 1.0  # the past: refused as `schedule` refuses it

    late.schedule(5.0, back, None)
    with pytest.raises(ValueError, match=r"cannot schedule an event at 4\.0"):
        late.run()


def chain(tokens: list[int], block_size: int) -> list[BlockHash]:
    """The engine's block hashes of `tokens`, computed from scratch."""
    hash_fn, parent = hash_function("builtin"), none_hash("builtin")
    out: list[BlockHash] = []
    for k in range(len(tokens) // block_size):
        parent = hash_fn(parent, tokens[k * block_size : (k + 1) * block_size], None)
        out.append(parent)
    return out


def test_conversation_keeps_the_engines_hash_chain_as_it_grows_and_is_truncated() -> None:
    rng = random.Random(1)
    conv = Conversation(random_token_ids(rng, 1000), (), block_size=16)
    for n in (5, 11, 700, 16, 3000):
        conv.extend(random_token_ids(rng, n))
        assert list(conv.block_hashes) == chain(conv.tokens, 16)
    conv.truncate(1001)
    assert len(conv.tokens) == 1001 and list(conv.block_hashes) == chain(conv.tokens, 16)
    conv.extend(random_token_ids(rng, 600))
    assert list(conv.block_hashes) == chain(conv.tokens, 16)
    # one prefix hash per full 256-token chunk: the hash of the block that ends it
    assert conv.prefix_hashes() == tuple(conv.block_hashes[15::16])
    assert len(conv.prefix_hashes()) == len(conv.tokens) // 256
    assert all(256 <= t < 32000 for t in conv.tokens)


def test_conversation_takes_an_engines_known_hashes_and_hashes_only_the_rest() -> None:
    rng = random.Random(2)
    for known_blocks in (0, 10, 62, 63, 64, 80):  # none, part of the prompt, up to and past the new blocks
        conv = Conversation(random_token_ids(rng, 1000), (), block_size=16)  # 62 full blocks
        more = random_token_ids(rng, 37)  # 1037 tokens: 64 full blocks
        full = chain(list(conv.tokens) + list(more), 16)
        # an engine's chain over the same tokens; past the tokens' full blocks it would be wrong: ignored
        known = full[:known_blocks] + [7] * max(0, known_blocks - len(full))
        conv.extend(more, known)
        assert list(conv.block_hashes) == full


def test_an_engines_last_output_carries_the_hash_chain_of_prompt_and_output() -> None:
    engine = Engine(PROFILES["llama3-8b-h100"], hash_algo="builtin")
    prompt = random_token_ids(random.Random(3), 100)
    request = EngineRequest(request_id="r", prompt_token_ids=prompt, max_tokens=40, ignore_eos=True)
    outputs = _run_alone(engine, request, own_prompt=False)
    last = outputs[-1]
    assert last.finish_reason is not None and last.block_hashes is not None
    tokens = list(prompt) + [t for o in outputs for t in o.new_token_ids]
    # every full block of what was computed (the last sampled token is not): 139 tokens, 8 blocks
    assert list(last.block_hashes) == chain(tokens, 16)[: (len(tokens) - 1) // 16]


def _run_alone(engine: Engine, request: EngineRequest, own_prompt: bool) -> list[RequestOutput]:
    engine.add_request(request, 0.0, own_prompt=own_prompt)
    outputs: list[RequestOutput] = []
    now = 0.0
    while engine.has_unfinished():
        result = engine.step(now)
        outputs += result.outputs
        now = result.end
    return outputs


def test_an_engine_that_owns_the_prompt_appends_its_answer_there_and_answers_the_same() -> None:
    prompt = random_token_ids(random.Random(4), 300)
    answers = []
    for own_prompt in (False, True):
        given = array("q", prompt)
        engine = Engine(PROFILES["llama3-8b-h100"], hash_algo="builtin")
        request = EngineRequest(request_id="r", prompt_token_ids=given, max_tokens=70, ignore_eos=True)
        outputs = _run_alone(engine, request, own_prompt)
        output = [t for o in outputs for t in o.new_token_ids]
        answers.append((output, list(outputs[-1].block_hashes or ())))
        # a copying engine leaves the caller's buffer alone; an owning one leaves prompt + answer in it
        assert list(given) == list(prompt) + (output if own_prompt else [])
    assert answers[0] == answers[1] and len(answers[0][0]) == 70
    # the conversation whose buffer the engine owned catches up as one that appends the answer itself
    rng = random.Random(5)
    appended, extended = (Conversation(array("q", prompt), (), block_size=16) for _ in range(2))
    output, known = answers[0]
    appended.tokens.extend(output)  # what the owning engine did
    appended.extend(output, known, appended=True)
    extended.extend(output, known)
    assert appended.tokens == extended.tokens and appended.checksum == extended.checksum
    assert list(appended.block_hashes) == list(extended.block_hashes) == chain(extended.tokens, 16)
    observation = random_token_ids(rng, 500)
    appended.extend(observation)
    extended.extend(observation)
    assert appended.checksum == extended.checksum
    assert list(appended.block_hashes) == chain(extended.tokens, 16)


def test_tasks_of_one_agent_type_share_the_system_prompt_tokens_and_nothing_else() -> None:
    prompts = PromptSource(block_size=16)
    a, b = small_swe(2)
    web = webarena_tasks(1)[0]
    (conv_a, _), (conv_b, _), (conv_web, _) = prompts.start(a), prompts.start(b), prompts.start(web)
    n = a.system_tokens
    assert conv_a.tokens[:n] == conv_b.tokens[:n]
    assert conv_a.tokens[n : n + 16] != conv_b.tokens[n : n + 16]
    assert conv_a.tokens[:16] != conv_web.tokens[:16]
    assert list(conv_a.block_hashes) == chain(conv_a.tokens, 16)


# ---- whole runs -------------------------------------------------------------------------------------


def test_same_inputs_give_identical_results_and_the_seed_matters() -> None:
    tasks = small_swe(12, seed=3)
    one = run_cluster(tasks, replicas=3, policy="least-request", seed=5, concurrency=6)
    two = run_cluster(tasks, replicas=3, policy="least-request", seed=5, concurrency=6)
    assert as_data(one) == as_data(two)
    other = run_cluster(tasks, replicas=3, policy="least-request", seed=6, concurrency=6)
    placement = [[c.replica for c in t.calls] for t in one.tasks]
    assert placement != [[c.replica for c in t.calls] for t in other.tasks]


def test_every_call_of_every_task_finishes_and_prompts_grow_by_output_and_observation() -> None:
    tasks = small_swe(10, seed=1)
    result = run_cluster(tasks, replicas=2, policy="round-robin", concurrency=4)
    assert [r.session_id for r in result.tasks] == [t.session_id for t in tasks]
    for task, record in zip(tasks, result.tasks, strict=True):
        assert not record.failed and len(record.calls) == len(task.steps)
        prompt = task.system_tokens + task.task_tokens
        for step, call in zip(task.steps, record.calls, strict=True):
            assert call.prompt_tokens == prompt and call.completion_tokens == step.output_tokens
            assert call.ttft_s is not None and 0 < call.ttft_s <= call.latency_s
            assert call.queue_s is not None and 0 <= call.queue_s < call.ttft_s
            prompt += step.output_tokens + step.observation_tokens
        # the task ends after its last tool call, as the HTTP agent client counts it
        last = record.calls[-1]
        assert record.finished_s == pytest.approx(
            last.started_s + last.latency_s + task.steps[-1].tool_time_s
        )
    calls = sum(len(t.steps) for t in tasks)
    assert result.calls == calls == sum(r.calls for r in result.replicas)
    assert sum(r.generation_tokens for r in result.replicas) == sum(
        s.output_tokens for t in tasks for s in t.steps
    )
    assert result.duration_s == max(r.finished_s for r in result.tasks)


def test_history_free_browser_agents_resend_only_the_system_prompt_and_the_observation() -> None:
    params = WebArenaParams(context_mode="baseline", steps_per_task=LogNormal(4, 6, cap=6))
    tasks = webarena_tasks(4, seed=2, params=params)
    result = run_cluster(tasks, replicas=2, policy="session-affinity")
    for task, record in zip(tasks, result.tasks, strict=True):
        assert record.calls[0].prompt_tokens == task.system_tokens + task.task_tokens
        for prev, call in zip(task.steps, record.calls[1:], strict=False):
            assert call.prompt_tokens == task.system_tokens + prev.observation_tokens
            assert call.cached_tokens >= task.system_tokens // 16 * 16  # the shared part is all that hits


def test_session_affinity_hits_the_prefix_cache_more_and_finishes_tasks_sooner_than_round_robin() -> None:
    tasks = small_swe(16, seed=4)
    rr = run_cluster(tasks, replicas=4, policy="round-robin", concurrency=8)
    sa = run_cluster(tasks, replicas=4, policy="session-affinity", concurrency=8)
    assert sa.prefix_hit_rate() > rr.prefix_hit_rate() + 0.1
    assert sa.summary().tct_mean_s < 0.95 * rr.summary().tct_mean_s  # decode dominates short contexts
    # affinity: every call of a task on one replica; round-robin spreads them
    assert all(len({c.replica for c in t.calls}) == 1 for t in sa.tasks)
    assert any(len({c.replica for c in t.calls}) > 1 for t in rr.tasks)


def test_closed_loop_runs_at_most_concurrency_tasks_and_refills_each_freed_slot_at_once() -> None:
    tasks = small_swe(9, seed=5)
    result = run_cluster(tasks, replicas=2, policy="round-robin", concurrency=3)
    records = result.tasks
    assert [r.started_s for r in records[:3]] == [0.0, 0.0, 0.0]
    ends = sorted(r.finished_s for r in records)
    # the k-th task after the first three starts exactly when the k-th task ends
    assert sorted(r.started_s for r in records[3:]) == ends[:6]
    events = sorted([(r.started_s, 1) for r in records] + [(r.finished_s, -1) for r in records])
    running = peak = 0
    for _, delta in events:  # ends sort before starts at the same instant
        running += delta
        peak = max(peak, running)
    assert peak == 3


def test_open_loop_arrivals_are_the_seeded_poisson_process() -> None:
    tasks = small_swe(8, seed=6)
    result = run_cluster(tasks, replicas=2, policy="round-robin", arrival_rate=0.5, seed=11)
    rng, at, expected = random.Random(11), 0.0, []
    for _ in tasks:
        at += rng.expovariate(0.5)
        expected.append(at)
    assert [r.started_s for r in result.tasks] == expected
    again = run_cluster(tasks, replicas=2, policy="round-robin", arrival_rate=0.5, seed=12)
    assert [r.started_s for r in again.tasks] != expected
    gaps = [b - a for a, b in zip([0.0, *expected], expected, strict=False)]
    assert 0.5 < statistics.fmean(gaps) < 8  # mean gap 2 s, loosely


def test_tasks_with_an_arrival_time_start_then() -> None:
    tasks = [
        t if i % 2 else msgspec.structs.replace(t, arrival_s=5.0 * i) for i, t in enumerate(small_swe(4))
    ]
    result = run_cluster(tasks, replicas=2, concurrency=1)
    assert result.tasks[0].started_s == 0.0 and result.tasks[2].started_s == 10.0
    assert result.tasks[1].started_s == 0.0  # the closed-loop slot
    assert result.tasks[3].started_s == result.tasks[1].finished_s


def test_passing_prompt_block_hashes_changes_nothing() -> None:
    tasks = small_swe(10, seed=7) + webarena_tasks(4, seed=7)
    given = run_cluster(tasks, replicas=3, policy="session-affinity", concurrency=5)
    hashed = run_cluster(tasks, replicas=3, policy="session-affinity", concurrency=5, pass_block_hashes=False)
    assert as_data(given.tasks) == as_data(hashed.tasks)
    assert as_data(given.replicas) == as_data(hashed.replicas)


def test_memory_pressure_shows_in_preemptions_recomputation_and_kv_usage() -> None:
    # 16k tokens of KV per replica for agents that grow to ~10k tokens each
    profile = msgspec.structs.replace(
        ClusterConfig().resolved_profile(), kv_capacity_tokens=16_384, max_model_len=16_384
    )
    params = msgspec.structs.replace(SMALL_SWE, max_context_tokens=10_000)
    tasks = swe_tasks(12, seed=8, params=params)
    result = run_cluster(tasks, replicas=2, profile=profile, policy="session-affinity")
    assert not any(t.failed for t in result.tasks)
    reps = result.replicas
    assert sum(r.preemptions for r in reps) > 0
    assert sum(r.recomputed_prefill_tokens for r in reps) > 0
    assert all(0.5 < r.kv_usage_peak <= 1.0 and 0 < r.kv_usage_mean < r.kv_usage_peak for r in reps)


def test_recomputation_with_a_cpu_tier_counts_what_preempted_calls_computed_again() -> None:
    """The thirteenth review: counted as prefill less each call's first prefill, recomputation went negative
    with a CPU tier (-6,618 tokens on a replica): a preempted call readmitted found more of its prompt on the
    CPU tier than it had cached at first. The engine now counts what a preempted call computes again."""
    tasks = generate("swe", 16, seed=0)
    result = run_cluster(
        tasks, replicas=2, policy="session-affinity", concurrency=8, kv_scale=0.25, kv_offload_gib=16.0
    )
    reps = result.replicas
    assert sum(r.preemptions for r in reps) > 0
    assert all(0 <= r.recomputed_prefill_tokens <= r.prefill_tokens for r in reps)
    assert sum(r.recomputed_prefill_tokens for r in reps) > 0


def test_a_call_the_engine_refuses_fails_its_task_and_the_run_goes_on() -> None:
    step = Step(output_tokens=100, tool_name="bash", tool_time_s=0.5, observation_tokens=100)
    fits = AgentTask("fits", system_tokens=500, task_tokens=500, steps=[step, step])
    too_long = AgentTask("too-long", system_tokens=500, task_tokens=3000, steps=[step])
    result = run_cluster([too_long, fits], replicas=1, profile="tiny-cpu", concurrency=1)
    failed, ok = result.tasks
    assert failed.failed and len(failed.calls) == 1
    assert "maximum context length" in (failed.calls[0].error or "")
    assert not ok.failed and len(ok.calls) == 2 and ok.started_s == failed.finished_s


def test_a_rejected_call_fails_its_task_and_the_others_run_on() -> None:
    tasks = small_swe(3, seed=11)
    config = ClusterConfig(replicas=2, concurrency=2)
    cluster = Cluster(tasks, config)

    class RejectingCore(
        SchedulerCore
    ):  # a subclass: a compiled core's methods cannot be replaced on an instance
        def request_arrived(self, info: RequestInfo) -> list[Decision]:
            if info.request_id == f"{tasks[0].session_id}/1":
                return [Reject(info.request_id, "no healthy replica")]
            return super().request_arrived(info)

    # the core the cluster built, but rejecting task 0's second call
    cluster.core = RejectingCore(
        cluster.replicas,
        build_policy(config.policy, seed=config.seed),
        cluster.queue,
        session_idle_ttl_s=config.session_idle_ttl_s,
        tenants=TenantsConfig(),
    )
    result = cluster.run()
    first, *others = result.tasks
    assert first.failed and len(first.calls) == 2
    assert first.calls[1].error == "rejected (503): no healthy replica"
    assert first.finished_s == first.calls[1].started_s  # no tool time after a failed call
    assert all(
        not t.failed and len(t.calls) == len(task.steps) for t, task in zip(others, tasks[1:], strict=True)
    )
    assert result.tasks[2].started_s == first.finished_s  # its slot went to the next task at once


def test_retention_from_the_policy_reaches_the_engines() -> None:
    policy = PolicySpec(
        picker=PluginSpec("max-score-picker"),
        scorers=[PluginSpec("session-affinity-scorer")],
        retention=PluginSpec("fixed-ttl-retention", params={"ttl_s": 10_000.0}),
    )
    cluster = Cluster(small_swe(4, seed=9), ClusterConfig(replicas=2, policy=policy))
    result = cluster.run()
    assert not any(t.failed for t in result.tasks)
    retained = sum(r.engine.stats().num_retained_sessions for r in cluster.replicas.values())
    assert retained == 4  # each session's last call left its prefix retained


def test_the_retention_priority_from_the_policy_reaches_the_engines() -> None:
    policy = PolicySpec(
        picker=PluginSpec("max-score-picker"),
        scorers=[PluginSpec("session-affinity-scorer")],
        retention=PluginSpec("fixed-ttl-retention", params={"ttl_s": 10_000.0, "priority": -3}),
    )
    cluster = Cluster(small_swe(3, seed=9), ClusterConfig(replicas=2, policy=policy))
    cluster.run()
    infos = [i for r in cluster.replicas.values() for i in r.engine.retention.snapshot(0.0)]
    assert len(infos) == 3 and {i.priority for i in infos} == {-3}


def test_progress_is_reported_in_virtual_time_until_every_task_is_done() -> None:
    seen: list[ClusterProgress] = []
    tasks = small_swe(6, seed=10)
    run_cluster(tasks, replicas=2, concurrency=2, progress=seen.append, progress_interval_s=5.0)
    times = [p.now_s for p in seen]
    assert times == sorted(times) and len(seen) > 2
    assert seen[-1].tasks_finished == seen[-1].tasks_total == 6 and seen[-1].calls_in_flight == 0
    assert any(p.calls_in_flight > 0 for p in seen)


def test_bad_configuration_fails_before_running() -> None:
    tasks = small_swe(1)
    with pytest.raises(ValueError, match="not both"):
        run_cluster(tasks, replicas=1, concurrency=2, arrival_rate=1.0)
    with pytest.raises(ValueError, match="unknown policy"):
        run_cluster(tasks, replicas=1, policy="no-such-policy")
    with pytest.raises(ValueError, match="unknown simulator profile"):
        run_cluster(tasks, replicas=1, profile="no-such-profile")
    # a task of no calls (the thirteenth review: an IndexError once running)
    with pytest.raises(ValueError, match="at least one step"):
        run_cluster([msgspec.structs.replace(tasks[0], steps=[])], replicas=1)
