"""`saga bench core`: the scheduler core's decision cost per call, with many replicas and live sessions.

Contract: for each policy preset (and with and without a release queue) a fresh `SchedulerCore` is built as
the proxy and the discrete-event cluster build it, on a hand-stepped clock (1 ms per call). `--sessions`
sessions are made live first (one call each, arrived and finished, so every one is in the core's table and
the policy's state), then calls are spread over them round-robin in a shuffled order: each call arrives, and
while more than `--in-flight` calls are dispatched the oldest gets its first token and finishes, so the
core always has that many calls in flight and a session's next call sees what its previous one left. Each
call's prompt grows by one prefix chunk per call of its session, after a system prompt shared by its agent
type. Every replica first reports its load and its KV capacity (`--kv-capacity-tokens`, where the core's
`ReplicaStats` takes it); then every 64 calls one replica reports new load figures (not timed) and the core
ticks (timed on its own: p50/p99 per tick, not part of any call's cost). With `--new-workflows F`, each timed
call first ends its session's workflow with probability F (`session_ended`, not timed) and begins a new one
in its place: a new session id, whose first call waits for admission and is routed over every replica.
Timed per event (`request_arrived`, `first_token`, `request_finished`; a call's cost is the sum of its
three) twice: on the wall clock (`time.perf_counter_ns`) and in this thread's CPU time
(`time.thread_time_ns`), which leaves out the time the OS ran other processes — on a shared machine the
wall-clock tail is mostly that, the CPU-time tail is the core's own. After `--warmup` untimed calls,
`--calls` timed ones: p50/p99/max in µs per event and per call, and calls/s = timed calls / the CPU time
spent inside those core methods. Compare figures measured side by side only. With `--repeats N` (> 1) the
same seeded run is made N times (the calls and decisions are the same each time) and each row also gives the
per-call costs' p50/p99 of every call's least CPU time over the N runs (`per_call_least`): a delay the host
adds to one run (another process's cache pollution, a page fault) rarely lands on the same call twice, so
it shows what the core itself costs a call; the row's other figures are the first run's.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import random
import time
from array import array
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from fairness.tenants import TenantsConfig
from loadtests.bench.report import machine_description, recorded_command
from loadtests.summary import percentile
from proxy.arg_types import at_least, output_file
from proxy.scheduler import (
    PRESETS,
    Decision,
    Dispatch,
    ReplicaStats,
    RequestInfo,
    SchedulerCore,
    Usage,
    build_policy,
)
from proxy.scheduler.release import ReleaseQueue, ReleaseQueueSpec
from proxy.scheduler.types import PREFIX_CHUNK_TOKENS
from simulator.cost_model import get_profile

AGENT_TYPES = 8
SYSTEM_CHUNKS = 4  # the shared system prompt and tool definitions: 1,024 tokens
MAX_SESSION_CHUNKS = 64  # a session's own history stops growing at 16k tokens
DEFAULT_KV_CAPACITY_TOKENS = get_profile("llama3-8b-h100").kv_capacity_tokens  # per replica


class EventCost(msgspec.Struct):
    """CPU time of this thread (the core's own cost), and the wall clock's beside it."""

    p50_us: float
    p99_us: float
    max_us: float
    wall_p50_us: float
    wall_p99_us: float
    wall_max_us: float


class CoreBenchRow(msgspec.Struct):
    policy: str
    queue: bool
    replicas: int
    sessions_live: int  # in the core's table at the end of the timed calls
    calls: int
    calls_per_s: float  # timed calls / the CPU time spent inside the core
    per_call: EventCost  # request_arrived + first_token + request_finished of one call
    request_arrived: EventCost
    first_token: EventCost
    request_finished: EventCost
    held_at_end: int = 0  # calls the release queue still held when the timed calls ended
    tick: EventCost | None = None  # the periodic `tick` (not part of a call's cost)
    # --repeats N > 1: per call, its least CPU (and wall) time over the N identical runs
    per_call_least: EventCost | None = None
    repeats: int = 1
    per_call_p99_runs: list[float] = msgspec.field(default_factory=list)  # each run's per-call p99 (CPU µs)
    new_workflows: float = 0.0  # --new-workflows: the chance that a timed call begins a new workflow
    workflows_begun: int = 0  # timed calls that did (each in place of one that ended)


class CoreBenchReport(msgspec.Struct):
    command: str
    machine: str
    date: str
    replicas: int
    sessions: int
    calls: int
    warmup: int
    in_flight: int
    rows: list[CoreBenchRow]
    timer_overhead_us: float = 0.0  # CPU time an empty event measures (p50): the clocks' own share


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Samples:
    """CPU and wall ns per event, in two arrays: no object per sample for the garbage collector (tuples
    kept per call would make it run more often during the timed calls, inside the costs measured)."""

    def __init__(self) -> None:
        self.cpu = array("q")
        self.wall = array("q")

    def add(self, cpu: int, wall: int) -> None:
        self.cpu.append(cpu)
        self.wall.append(wall)

    def __len__(self) -> int:
        return len(self.cpu)


def _cost(samples: _Samples) -> EventCost:
    """From the samples' CPU and wall ns."""
    cpu = [c / 1000 for c in samples.cpu]
    wall = [w / 1000 for w in samples.wall]
    return EventCost(
        percentile(cpu, 50),
        percentile(cpu, 99),
        max(cpu, default=0.0),
        percentile(wall, 50),
        percentile(wall, 99),
        max(wall, default=0.0),
    )


def timer_overhead_us(samples: int = 20_000) -> float:
    """The p50 CPU time the timing of an empty event measures (part of the clocks' own cost)."""
    measured = []
    for _ in range(samples):
        wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
        cpu, wall = time.thread_time_ns() - cpu, time.perf_counter_ns() - wall
        measured.append(cpu)
    return percentile([m / 1000 for m in measured], 50)


def _chain(parent: int, n: int, salt: int) -> list[int]:
    out = []
    for k in range(n):
        parent = hash((parent, salt, k))
        out.append(parent)
    return out


class _Sessions:
    """Each session's prefix: its agent type's system chunks, then one chunk of its own per call so far."""

    def __init__(self, sessions: int, seed: int) -> None:
        self.system = [_chain(0, SYSTEM_CHUNKS, -1 - a) for a in range(AGENT_TYPES)]
        self.calls = [0] * sessions
        self.generation = [0] * sessions  # a session slot's workflows, one after another
        self.own = [_chain(0, MAX_SESSION_CHUNKS, s) for s in range(sessions)]
        order = list(range(sessions))
        random.Random(seed).shuffle(order)
        self.order = order

    def session_id(self, session: int) -> str:
        generation = self.generation[session]
        return f"s{session}" if not generation else f"s{session}.{generation}"

    def renew(self, session: int) -> None:
        """A new workflow in the slot: a fresh session id, its history from the system prompt again."""
        self.generation[session] += 1
        self.calls[session] = 0

    def request(self, seq: int, session: int, now: float) -> RequestInfo:
        agent = session % AGENT_TYPES
        n = min(self.calls[session] + 1, MAX_SESSION_CHUNKS)
        self.calls[session] += 1
        hashes = (*self.system[agent], *self.own[session][:n])
        return RequestInfo(
            request_id=f"r{seq}",
            session_id=self.session_id(session),
            arrived_at=now,
            agent_type=f"agent-{agent}",
            prompt_tokens=len(hashes) * PREFIX_CHUNK_TOKENS,
            prefix_hashes=hashes,
        )


def bench_core(
    policy: str,
    *,
    queue: bool,
    replicas: int,
    sessions: int,
    calls: int,
    warmup: int,
    in_flight: int,
    seed: int = 0,
    kv_capacity_tokens: int = DEFAULT_KV_CAPACITY_TOKENS,
    new_workflows: float = 0.0,
    call_samples: list[_Samples] | None = None,
) -> CoreBenchRow:
    """One run; with `call_samples`, its per-call samples (in the calls' order) are appended there."""
    clock = _Clock()
    tenants = TenantsConfig()
    release = ReleaseQueue(ReleaseQueueSpec(max_queued=max(10_000, 2 * in_flight)), tenants, seed=seed)
    core = SchedulerCore(
        [f"replica-{i}" for i in range(replicas)],
        build_policy(policy, seed=seed),
        clock,
        release=release if queue else None,
        tenants=tenants,
        max_sessions=sessions * 2,
    )
    rng = random.Random(seed)
    table = _Sessions(sessions, seed)
    dispatched: deque[str] = deque()
    usage: dict[str, Usage] = {}
    spent: dict[str, tuple[int, int]] = {}  # request id -> (CPU ns, wall ns) spent in its events so far
    kinds = ("arrived", "first", "finished", "call", "tick")
    costs: dict[str, _Samples] = {kind: _Samples() for kind in kinds}
    timing = False

    def note(decisions: list[Decision]) -> None:
        for d in decisions:
            if isinstance(d, Dispatch):
                dispatched.append(d.request_id)
            else:
                raise RuntimeError(f"{policy}: the core rejected a call: {d.reason}")

    def timed(kind: str, rid: str, event: Callable[[], list[Decision]]) -> list[Decision]:
        wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
        decisions = event()
        cpu, wall = time.thread_time_ns() - cpu, time.perf_counter_ns() - wall
        if timing:
            costs[kind].add(cpu, wall)
        so_far = spent.get(rid, (0, 0))
        spent[rid] = (so_far[0] + cpu, so_far[1] + wall)
        return decisions

    def finish_oldest() -> None:
        rid = dispatched.popleft()
        note(timed("first", rid, lambda: core.first_token(rid)))
        note(timed("finished", rid, lambda: core.request_finished(rid, usage.pop(rid))))
        total = spent.pop(rid)
        if timing and rid in measured:
            costs["call"].add(*total)

    def one_call(seq: int, session: int) -> None:
        clock.now += 0.001
        if timing and new_workflows and rng.random() < new_workflows:
            # the session's workflow ends (untimed, as the client says so) and a new one takes its place
            note(core.session_ended(table.session_id(session)))
            table.renew(session)
            begun[0] += 1
        req = table.request(seq, session, clock.now)
        usage[req.request_id] = Usage(req.prompt_tokens, 200, req.prompt_tokens // 2, "tool_calls")
        if timing:
            measured.add(req.request_id)
        note(timed("arrived", req.request_id, lambda: core.request_arrived(req)))
        while dispatched and len(dispatched) + (len(release) if queue else 0) > in_flight:
            finish_oldest()  # a fixed population of agents: held calls count as in flight too
        if seq % 64 == 0:
            stats = ReplicaStats(
                f"replica-{rng.randrange(replicas)}",
                waiting=rng.randrange(4),
                running=rng.randrange(32),
                kv_usage=rng.random(),
            )
            note(core.replica_stats(stats))
            note(timed("tick", "tick", core.tick))
            spent.pop("tick")

    measured: set[str] = set()
    begun = [0]
    # every replica's first figures, with its KV capacity where the core takes it (as the proxy's first
    # scrape of vllm:cache_config_info and the discrete-event cluster's first report bring it)
    capacity: dict[str, Any] = {}
    if "kv_capacity_tokens" in ReplicaStats.__struct_fields__:
        capacity["kv_capacity_tokens"] = kv_capacity_tokens
    for r in range(replicas):
        note(core.replica_stats(ReplicaStats(f"replica-{r}", waiting=0, running=0, kv_usage=0.0, **capacity)))
    seq = 0
    for session in range(sessions):  # every session live: one call each, arrived and finished
        one_call(seq, session)
        seq += 1
    while dispatched:
        finish_oldest()
    for k in range(warmup):
        one_call(seq, table.order[k % sessions])
        seq += 1
    gc.collect()
    timing = True
    for k in range(calls):
        one_call(seq, table.order[(warmup + k) % sessions])
        seq += 1
    while measured & set(dispatched):  # finish the timed calls still in flight
        finish_oldest()
    timing = False
    total_ns = sum(sum(costs[kind].cpu) for kind in ("arrived", "first", "finished"))
    if call_samples is not None:
        call_samples.append(costs["call"])
    return CoreBenchRow(
        policy=policy,
        queue=queue,
        replicas=replicas,
        sessions_live=len(core.sessions),
        calls=len(costs["call"]),
        calls_per_s=len(costs["call"]) / (total_ns / 1e9) if total_ns else 0.0,
        per_call=_cost(costs["call"]),
        request_arrived=_cost(costs["arrived"]),
        first_token=_cost(costs["first"]),
        request_finished=_cost(costs["finished"]),
        held_at_end=len(release) if queue else 0,
        tick=_cost(costs["tick"]),
        new_workflows=new_workflows,
        workflows_begun=begun[0],
    )


def add_core_parser(modes: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = modes.add_parser("core", help="the scheduler core's decision cost per call (microbenchmark)")
    p.add_argument(
        "--policies", default=",".join(PRESETS), help=f"comma-separated; known: {', '.join(PRESETS)}"
    )
    p.add_argument("--replicas", type=at_least(1), default=64, help="replicas the core schedules over")
    p.add_argument(
        "--sessions", type=at_least(1), default=10_000, help="live sessions, calls spread over them"
    )
    p.add_argument("--calls", type=at_least(1), default=20_000, help="timed calls per policy")
    p.add_argument(
        "--warmup", type=at_least(0), default=10_000, help="untimed calls first (after the sessions')"
    )
    p.add_argument("--in-flight", type=at_least(1), default=256, help="calls dispatched and not yet finished")
    p.add_argument("--queue", choices=("both", "off", "on"), default="both", help="a release queue")
    p.add_argument("--seed", type=int, default=0, help="seed of the load")
    p.add_argument(
        "--kv-capacity-tokens", type=int, default=DEFAULT_KV_CAPACITY_TOKENS, help="per replica (reported)"
    )
    p.add_argument(
        "--new-workflows",
        type=float,
        default=0.0,
        help="share of timed calls that end their session's workflow and begin a new one (routed anew)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="identical runs per row: adds each call's least time over them (per_call_least)",
    )
    p.add_argument("--json", type=output_file, help="write the results as JSON here")


def run_core(args: argparse.Namespace) -> int:
    console = Console(width=200)
    policies = [p for p in args.policies.split(",") if p]
    unknown = [p for p in policies if p not in PRESETS]
    if unknown or not policies:
        console.print(f"[red]error:[/red] unknown policies {', '.join(unknown)}; known: {', '.join(PRESETS)}")
        return 2
    for name in ("replicas", "sessions", "calls", "in_flight", "repeats"):
        if getattr(args, name) < 1:
            console.print(f"[red]error:[/red] --{name.replace('_', '-')} must be at least 1")
            return 2
    if not 0.0 <= args.new_workflows <= 1.0:
        console.print("[red]error:[/red] --new-workflows must be in [0, 1]")
        return 2
    queues = {"both": (False, True), "off": (False,), "on": (True,)}[args.queue]
    rows = []
    for policy in policies:
        for queue in queues:
            runs: list[_Samples] = []
            first: CoreBenchRow | None = None
            for _ in range(args.repeats):
                row = bench_core(
                    policy,
                    queue=queue,
                    replicas=args.replicas,
                    sessions=args.sessions,
                    calls=args.calls,
                    warmup=args.warmup,
                    in_flight=args.in_flight,
                    seed=args.seed,
                    kv_capacity_tokens=args.kv_capacity_tokens,
                    new_workflows=args.new_workflows,
                    call_samples=runs,
                )
                first = first or row
            assert first is not None
            row = first
            if args.repeats > 1:
                row = msgspec.structs.replace(
                    first,
                    per_call_least=_cost(least_per_call(runs)),
                    repeats=args.repeats,
                    per_call_p99_runs=[round(_cost(r).p99_us, 1) for r in runs],
                )
            rows.append(row)
            console.print(
                f"{policy}{' + queue' if queue else ''}: p99 {row.per_call.p99_us:.1f} µs CPU per call "
                f"({row.per_call.wall_p99_us:.1f} µs wall), {row.calls_per_s:,.0f} calls/s"
            )
            least = row.per_call_least
            if least is not None:
                console.print(
                    f"  per-call p99 of each run {row.per_call_p99_runs}; each call's least over the "
                    f"{row.repeats} runs: p50 {least.p50_us:.1f}, p99 {least.p99_us:.1f} µs"
                )
    report = CoreBenchReport(
        command=recorded_command(),
        machine=machine_description(),
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        replicas=args.replicas,
        sessions=args.sessions,
        calls=args.calls,
        warmup=args.warmup,
        in_flight=args.in_flight,
        rows=rows,
        timer_overhead_us=timer_overhead_us(),
    )
    console.print(core_table(report))
    console.print(f"timer overhead: {report.timer_overhead_us:.2f} µs per event (CPU clock, p50)")
    if args.json:
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
        console.print(f"results: {args.json}")
    return 0


def least_per_call(runs: list[_Samples]) -> _Samples:
    """Each call's least CPU and least wall time over identical runs (their samples are in the same order)."""
    if len({len(r) for r in runs}) != 1:
        raise RuntimeError("the repeated runs timed different numbers of calls")
    least = _Samples()
    least.cpu = array("q", map(min, *(r.cpu for r in runs))) if len(runs) > 1 else array("q", runs[0].cpu)
    least.wall = array("q", map(min, *(r.wall for r in runs))) if len(runs) > 1 else array("q", runs[0].wall)
    return least


def core_table(report: CoreBenchReport) -> Table:
    table = Table(
        title=f"Scheduler core: {report.replicas} replicas, {report.sessions:,} live sessions, "
        f"{report.in_flight} calls in flight (µs of CPU per call: arrived + first token + finished)"
    )
    heads = (
        "policy",
        "queue",
        "p50",
        "p99",
        "max",
        "wall p99",
        "calls/s",
        "arrived p99",
        "finished p99",
        "tick p99",
        "live",
    )
    for head in heads:
        table.add_column(head, justify="left" if head in ("policy", "queue") else "right")
    for r in report.rows:
        table.add_row(
            r.policy,
            "on" if r.queue else "off",
            f"{r.per_call.p50_us:.1f}",
            f"{r.per_call.p99_us:.1f}",
            f"{r.per_call.max_us:.0f}",
            f"{r.per_call.wall_p99_us:.1f}",
            f"{r.calls_per_s:,.0f}",
            f"{r.request_arrived.p99_us:.1f}",
            f"{r.request_finished.p99_us:.1f}",
            f"{r.tick.p99_us:.0f}" if r.tick is not None else "-",
            f"{r.sessions_live:,}",
        )
    return table
