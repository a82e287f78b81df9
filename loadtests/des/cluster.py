"""A discrete-event cluster: simulated vLLM engines behind the unchanged scheduler core, on one virtual clock.

Contract:
- Replicas are `simulator.engine.Engine`s, the model the HTTP replicas run ("builtin" block hashes). The
  scheduler is `proxy.scheduler.SchedulerCore` built as the proxy builds it (`build_policy(policy, seed)`),
  its clock the event queue's virtual clock.
- A replica steps back to back while it has work: a step started at t delivers its outputs at t + duration,
  when the next step starts. An idle replica wakes when a call is added, at that instant but after the other
  events due then, so calls arriving together share a step.
- With `config.queue`, the core holds calls in its release queue (proxy/scheduler/release.py) and answers
  them later, from `request_finished`, `replica_stats` or `tick`.
- Every call is reported with `request_arrived` (RequestInfo filled: session, tenant, agent type, arrival,
  prompt tokens, prefix hashes; with `config.kv_events`, `kv_resident`: for each replica the session was
  sent to, the tokens of the call's prompt its prefix cache holds now, what the replicas' KV events tell a
  subscribed proxy) and its decision carried out: `Dispatch` adds it to that replica's engine
  (max_tokens = the step's output with ignore_eos, priority, session id, retain_ttl_s); `Reject`, or an
  engine refusing the request, fails the call and ends its task. The core also hears `first_token`,
  `request_finished` with usage for every dispatched call, `replica_stats` (waiting, running, KV usage) for
  each replica whose values changed since its last report, sampled every `stats_interval_s`, and `tick` each
  `tick_interval_s`; decisions from any event are carried out, whichever call they answer.
- Task starts: a task with `arrival_s` starts then; the others start as closed-loop slots free up
  (`concurrency` at a time, all at time 0 when None) or, with `arrival_rate`, at the arrivals of a Poisson
  process drawn from `random.Random(seed)`.
- Engines run pure-decode steps coalesced (`coalesce_decode`, on by default): same results, less work per
  step; each step is still one event, so events interleave exactly as step by step.
- Deterministic: the same tasks and config give an identical `ClusterResult` (no wall clock, seeded
  randomness only, ties between simultaneous events broken by scheduling order).
"""

from __future__ import annotations

import itertools
import random
from array import array
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from fairness.tenants import TenantsConfig
from loadtests.des.client import HASH_ALGO, AgentRun, PendingCall, PromptSource
from loadtests.des.event_queue import EventQueue
from loadtests.des.kv_figures import Oversubscription
from loadtests.des.replica import ClusterReplica
from loadtests.des.result import ClusterConfig, ClusterProgress, ClusterResult
from loadtests.tasks import AgentTask, TaskRecord
from proxy.scheduler import Decision, Dispatch, PolicySpec, ReplicaStats, SchedulerCore, Usage, build_policy
from proxy.scheduler.release import ReleaseQueue
from simulator.cost_model import Profile
from simulator.engine import Engine, EngineRequest, InvalidRequestError, RequestOutput

ProgressCallback = Callable[[ClusterProgress], None]
# A named default: mypyc cannot write a text signature for a float keyword default beside **options.
PROGRESS_INTERVAL_S = 10.0


class Cluster:
    """One run: `Cluster(tasks, config).run()`; see the module contract."""

    def __init__(
        self,
        tasks: Sequence[AgentTask],
        config: ClusterConfig,
        *,
        progress: ProgressCallback | None = None,
        progress_interval_s: float = PROGRESS_INTERVAL_S,
    ) -> None:
        config.validate()
        for task in tasks:
            task.validate()  # a NaN time would stall the virtual clock: refuse it naming the task
        self.tasks = list(tasks)
        self.config = config
        self.queue = EventQueue()
        profile = config.resolved_profile()
        self.prompts = PromptSource(profile.block_size)
        self.replicas = {
            f"replica-{i}": ClusterReplica(
                f"replica-{i}",
                Engine(
                    profile,
                    scheduling_policy=config.scheduling_policy,
                    hash_algo=HASH_ALGO,
                    coalesce_decode=config.coalesce_decode,
                    kv_offload_gib=config.kv_offload_gib,
                ),
            )
            for i in range(config.replicas)
        }
        policy = build_policy(config.policy, seed=config.seed)
        tenants = config.tenants or TenantsConfig()
        release = None if config.queue is None else ReleaseQueue(config.queue, tenants, seed=config.seed)
        self.core = SchedulerCore(
            self.replicas,
            policy,
            self.queue,
            session_idle_ttl_s=config.session_idle_ttl_s,
            release=release,
            tenants=tenants,
        )
        self.records: list[TaskRecord | None] = [None] * len(self.tasks)
        self._pending: dict[str, PendingCall] = {}  # arrived, waiting for the core's decision
        self._in_flight: dict[str, PendingCall] = {}  # on an engine
        self._slot_tasks = iter([i for i, t in enumerate(self.tasks) if t.arrival_s is None])
        self._progress = progress
        self._progress_interval_s = progress_interval_s
        self.tasks_started = self.tasks_finished = self.calls_finished = self.calls_failed = 0
        self.end_s = 0.0
        self.kv_capacity_tokens = profile.num_gpu_blocks * profile.block_size
        self.block_size = profile.block_size
        self._sent_to: dict[str, set[str]] = {}  # session -> the replicas it was sent to (`kv_events` only)
        self.oversubscription = Oversubscription(config.replicas * self.kv_capacity_tokens)

    # ---- the run --------------------------------------------------------------------------------------

    def run(self) -> ClusterResult:
        """Run every task to its end (once per Cluster)."""
        cfg, queue = self.config, self.queue
        if queue.events_run:
            raise RuntimeError("a Cluster runs once; build a new one")
        for i, task in enumerate(self.tasks):
            if task.arrival_s is not None:
                queue.schedule(task.arrival_s, self._start_task, i)
        if cfg.arrival_rate is not None:
            rng = random.Random(cfg.seed)
            at = 0.0
            for i in self._slot_tasks:
                at += rng.expovariate(cfg.arrival_rate)
                queue.schedule(at, self._start_task, i)
        else:
            for i in itertools.islice(self._slot_tasks, cfg.concurrency or len(self.tasks)):
                queue.schedule(0.0, self._start_task, i)
        if self.tasks:
            queue.schedule(0.0, self._sample_stats, None)
            queue.schedule(cfg.tick_interval_s, self._tick, None)
            if self._progress is not None:
                queue.schedule(0.0, self._report_progress, None)
        queue.run()
        assert self.tasks_finished == len(self.tasks) and not self._in_flight and not self._pending
        if self._progress is not None:
            self._progress(self.snapshot())
        records = [r for r in self.records if r is not None]
        over = self.oversubscription
        return ClusterResult(
            config=cfg,
            duration_s=self.end_s,
            tasks=records,
            replicas=[rep.counters(self.end_s) for rep in self.replicas.values()],
            events=queue.events_run,
            kv_capacity_tokens=over.capacity_tokens,
            kv_oversubscription_peak=over.peak,
            kv_oversubscription_mean=over.mean(self.end_s),
        )

    @property
    def _done(self) -> bool:
        return self.tasks_finished == len(self.tasks)

    # ---- tasks and calls ------------------------------------------------------------------------------

    def _start_task(self, index: int) -> None:
        run = AgentRun(self.tasks[index], self.prompts, self.queue.now)
        self.oversubscription.update(run)
        self.records[index] = run.record
        self.tasks_started += 1
        self._send(run)

    def _end_task(self, run: AgentRun) -> None:
        self.oversubscription.remove(run)
        if run.parent is not None:  # a subagent: its parent's next call may be due
            self._resume(run.parent)
            return
        self.tasks_finished += 1
        self.end_s = max(self.end_s, self.queue.now)
        if run.task.arrival_s is None and self.config.arrival_rate is None:
            next_index = next(self._slot_tasks, None)  # closed loop: the freed slot takes the next task
            if next_index is not None:
                self._start_task(next_index)

    def _resume(self, run: AgentRun) -> None:
        """One of the things the run's next call waits for (its tool's time, a subagent) is done."""
        run.waiting -= 1
        if run.waiting == 0:
            self._send(run)

    def _spawn(self, run: AgentRun, subagents: tuple[AgentTask, ...], tool_done_at: float) -> None:
        """The run's last answer spawned subagents: they start now, and its next call waits for them and
        its tool's time."""
        now = self.queue.now
        run.waiting = len(subagents) + 1
        self.queue.schedule(tool_done_at, self._resume, run)
        for task in subagents:
            child = AgentRun(task, self.prompts, now, parent=run)
            run.record.subagents.append(child.record)
            self.oversubscription.update(child)
            self._send(child)

    def _send(self, run: AgentRun) -> None:
        call = run.next_call(self.queue.now)
        if self.config.kv_events:
            call.info = msgspec.structs.replace(call.info, kv_resident=self._resident(call))
        self._pending[call.info.request_id] = call
        self._apply(self.core.request_arrived(call.info))

    def _resident(self, call: PendingCall) -> dict[str, int]:
        """What each replica the session was sent to caches of the call's prompt (its leading cached
        blocks)."""
        sent_to = self._sent_to.get(call.info.session_id)
        if not sent_to:
            return {}
        bs = self.block_size
        return {r: len(self.replicas[r].engine.pool.lookup(call.prompt_hashes)) * bs for r in sorted(sent_to)}

    def _apply(self, decisions: list[Decision]) -> None:
        for decision in decisions:
            call = self._pending.pop(decision.request_id, None)
            if call is None:
                raise RuntimeError(f"scheduler decided on unknown call {decision.request_id!r}")
            if isinstance(decision, Dispatch):
                self._dispatch(call, decision)
            else:
                self._fail(call, f"rejected ({decision.status}): {decision.reason}")

    def _dispatch(self, call: PendingCall, decision: Dispatch) -> None:
        replica = self.replicas[decision.replica_id]
        info = call.info
        request = EngineRequest(
            request_id=info.request_id,
            prompt_token_ids=call.prompt,
            max_tokens=call.max_tokens,
            ignore_eos=True,
            priority=decision.priority or 0,
            prompt_block_hashes=call.prompt_hashes if self.config.pass_block_hashes else None,
            prompt_checksum=call.checksum if self.config.pass_block_hashes else None,
            session_id=info.session_id,
            retain_ttl_s=decision.retain_ttl_s,
            retain_priority=decision.retain_priority,
        )
        call.replica_id = replica.replica_id
        if self.config.kv_events:
            self._sent_to.setdefault(info.session_id, set()).add(replica.replica_id)
        call.prompt, call.prompt_hashes = array("q"), array("q")  # the engine owns or copied them
        now = self.queue.now
        try:
            # the engine appends the answer to the conversation's own buffer (AgentRun.call_finished)
            replica.engine.add_request(request, now, own_prompt=True)
        except InvalidRequestError as e:
            self._apply(self.core.request_finished(info.request_id))
            self._fail(call, f"invalid request: {e}")
            return
        replica.calls += 1
        self._in_flight[info.request_id] = call
        if not replica.stepping:
            replica.stepping = True
            replica.wake_at = None  # stepping again: a pending wake-up is stale
            self.queue.schedule(now, self._step, replica)

    def _fail(self, call: PendingCall, error: str) -> None:
        self.calls_failed += 1
        call.run.call_failed(call, error, self.queue.now)
        self.queue.schedule(self.queue.now, self._end_task, call.run)  # queued: no recursion via next task

    # ---- replicas -------------------------------------------------------------------------------------

    def _step(self, replica: ClusterReplica) -> float | None:
        """Deliver the finished step's outputs, then start the next step if there is work: returns when it
        ends, and the event queue runs `_step` again then (EventQueue's contract)."""
        now = self.queue.now
        if replica.outputs:
            outputs, replica.outputs = replica.outputs, []
            self._deliver(replica, outputs, now)
            end = replica.step(now)
        else:  # most steps: a quiet step of a decode run (ClusterReplica.step's first case, inlined)
            duration = replica.engine.quiet_step(now)
            if duration is not None:
                replica.steps += 1
                replica.busy_s += duration
                return now + duration
            end = replica.ordinary_step(now)
        if end is None and replica.wake_at is not None:
            self.queue.schedule(replica.wake_at, self._wake, replica)
        return end

    def _wake(self, replica: ClusterReplica) -> None:
        """An idle replica's KV load is done: step again (unless a new call restarted it meanwhile)."""
        if replica.stepping or replica.wake_at is None or self.queue.now < replica.wake_at:
            return  # stale
        replica.wake_at = None
        replica.stepping = True
        end = self._step(replica)
        if end is not None:
            self.queue.schedule(end, self._step, replica)

    def _deliver(self, replica: ClusterReplica, outputs: list[RequestOutput], now: float) -> None:
        in_flight = self._in_flight
        for out in outputs:
            call = in_flight[out.request_id]
            call.output += out.new_token_ids
            if out.first_token:
                call.run.first_token(call, now)
                self._apply(self.core.first_token(out.request_id))
            if out.finish_reason is not None:
                del in_flight[out.request_id]
                self._finish(replica, call, out, now)

    def _finish(self, replica: ClusterReplica, call: PendingCall, last: RequestOutput, now: float) -> None:
        self.calls_finished += 1
        usage = Usage()
        if last.usage is not None:
            u = last.usage
            reason, tools = call.run.answer_tools(call)
            usage = Usage(u.prompt_tokens, u.completion_tokens, u.cached_tokens, reason, tools)
        run = call.run
        at, more = run.call_finished(call, last, now)
        self.oversubscription.update(run)
        subagents = run.task.steps[call.record.step].subagents if more else ()
        if not subagents:
            self.queue.schedule(at, self._send if more else self._end_task, run)
        self._apply(self.core.request_finished(call.info.request_id, usage))
        for session_id, replica_id in self.core.take_releases():  # the policy gave a retention up early
            self.replicas[replica_id].engine.release_retention(session_id)
        if subagents:  # after its call's end: the scheduler sees the parent's workflow between calls
            self._spawn(run, subagents, at)

    # ---- periodic events ------------------------------------------------------------------------------

    def _sample_stats(self, _: None) -> None:
        now = self.queue.now
        self.oversubscription.sample(now)
        decisions: list[Decision] = []
        for replica in self.replicas.values():
            replica.engine.expire_retentions(now)  # an idle engine does not step, so expire here
            load = replica.engine.load()
            replica.sample_kv(load[2], now)
            if load != replica.reported:  # the core keeps the last values: report changes only
                # the KV capacity, as the proxy scrapes it from vllm:cache_config_info, comes with the first
                capacity = self.kv_capacity_tokens if replica.reported is None else None
                replica.reported = load
                stats = ReplicaStats(
                    replica.replica_id,
                    waiting=load[0],
                    running=load[1],
                    kv_usage=load[2],
                    kv_capacity_tokens=capacity,
                    cpu_kv_tier=None if capacity is None else self.config.kv_offload_gib is not None,
                )
                decisions += self.core.replica_stats(stats)
        self._apply(decisions)
        if not self._done:
            self.queue.schedule(now + self.config.stats_interval_s, self._sample_stats, None)

    def _tick(self, _: None) -> None:
        self._apply(self.core.tick())
        if not self._done:
            self.queue.schedule(self.queue.now + self.config.tick_interval_s, self._tick, None)

    def _report_progress(self, _: None) -> None:
        assert self._progress is not None
        self._progress(self.snapshot())
        if not self._done:
            self.queue.schedule(self.queue.now + self._progress_interval_s, self._report_progress, None)

    def snapshot(self) -> ClusterProgress:
        views = self.core.replicas.values()
        return ClusterProgress(
            now_s=self.queue.now,
            tasks_total=len(self.tasks),
            tasks_started=self.tasks_started,
            tasks_finished=self.tasks_finished,
            calls_finished=self.calls_finished,
            calls_failed=self.calls_failed,
            calls_in_flight=len(self._in_flight),
            running=sum(v.running for v in views),
            waiting=sum(v.waiting for v in views),
            kv_usage_mean=sum(v.kv_usage for v in views) / max(1, len(views)),
            preemptions=sum(r.engine.num_preemptions for r in self.replicas.values()),
            events=self.queue.events_run,
        )


def run_cluster(
    tasks: Sequence[AgentTask],
    *,
    replicas: int,
    profile: str | Profile = "llama3-8b-h100",
    policy: str | PolicySpec = "round-robin",
    seed: int = 0,
    concurrency: int | None = None,
    arrival_rate: float | None = None,
    progress: ProgressCallback | None = None,
    progress_interval_s: float = PROGRESS_INTERVAL_S,
    **options: Any,
) -> ClusterResult:
    """Run `tasks` on a fresh cluster; `options` are the other `ClusterConfig` fields. Raises ValueError or
    proxy.scheduler.ConfigError on a bad configuration, before anything runs."""
    config = ClusterConfig(
        replicas=replicas,
        profile=profile,
        policy=policy,
        seed=seed,
        concurrency=concurrency,
        arrival_rate=arrival_rate,
        **options,
    )
    return Cluster(tasks, config, progress=progress, progress_interval_s=progress_interval_s).run()
