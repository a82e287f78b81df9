"""`saga bench predictor`: how well the learned graphs predict, and how close their KV retention comes to
Bélády.

The trace is call-level: per session, its calls with arrival, prompt tokens (the reusable prefix + the new
ones), output tokens and the gap after each (generated from a workload, or a CSV in the trace replay format).
Timing does not depend on the cache: a call takes `base_latency_s + decode_s_per_token x output`, the next
call of its session arrives the step's tool time after it ends, and sessions start at the points of a Poisson
process sized for `concurrency` live sessions on average (a CSV's own arrival times are kept). So every policy
replays the same events, and Bélády's offline policy can be handed the real future.

Cache model (the `predictor.ledger` model): one cache of C tokens holds each waiting session's prefix as a
unit (prompt + output of its last call); a call finds its session's entry (taking it out: the running call
holds it), reuses min(entry, its reusable prefix) and recomputes the rest of its prompt; when it ends, its
prefix is offered back. Running calls and sharing between sessions are not modelled. Policies:
- `belady`: on each eviction, the entry whose next use is furthest away (never-used-again first) — the
  session's true next arrival;
- `saga`: `predictor.PredictedRetention` on a `Predictor` learning online from the same replay;
- `lru`: least recently inserted first; `fixed-ttl-Ns`: pinned for N s, then LRU (Continuum's rule);
- `state-oracle` (a reference for what the learned graph can at best tell): the same ranking as `saga`
  (`ReturnModel.hit_rate`), on the true distribution of each state's gap and end (state: agent type and the
  tool the call asked for, or its finish reason), taken in hindsight from the whole trace; it knows how gaps
  from a state are distributed, never when this one ends. What separates it from Bélády is what no online
  policy given only the state can know; what separates `saga` from it is learning (online, from a cold
  start, with step buckets and ends detected by silence).
  `belady_ratio` is saga's recomputed tokens over Bélády's, counting only prefix tokens a cache could have
  saved (each session's first prompt is cold for every policy), worst over the cache sizes;
  `belady_ratio_total` counts every prefill token. Prediction quality is measured in its own pass: coverage of
  the predicted return-gap quantiles, Brier score of the end probability, error of the next prompt size and
  remaining calls.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import math
import random
import statistics
import sys
from collections.abc import Sequence
from typing import Any, Protocol

import msgspec

from loadtests.bench.report import machine_description, recorded_command
from loadtests.tasks import AgentTask
from loadtests.workloads.catalog import WORKLOADS, generate
from loadtests.workloads.trace_replay import load_trace
from predictor import PredictedRetention, Predictor, PredictorConfig, RetentionLedger, RetentionParams
from predictor.return_model import ReturnModel
from predictor.sketch import LogSketch, seconds_sketch
from proxy.arg_types import at_least, input_file, non_negative, number_list, output_file, positive


class TraceCall(msgspec.Struct):
    session_id: str
    agent_type: str
    index: int
    last: bool
    arrival: float
    finish: float
    prompt: int
    reusable: int  # prompt tokens a retained prefix of the session can cover (0 for the first call)
    output: int
    finish_reason: str
    tool_names: tuple[str, ...]
    request_tools: tuple[str, ...]
    next_arrival: float = math.inf
    calls_after: int = 0  # calls the session still makes after this one
    final_prompt: int = 0  # the prompt of the session's last call (its peak context)
    output_after: int = 0  # output tokens of the calls after this one


def build_trace(
    tasks: Sequence[AgentTask],
    *,
    concurrency: float,
    seed: int,
    base_latency_s: float = 0.05,
    decode_s_per_token: float = 0.012,
) -> list[list[TraceCall]]:
    """Per session, its calls on the cache-independent schedule described in the module docstring."""
    shapes = []
    for task in tasks:
        calls: list[TraceCall] = []
        t = 0.0
        prompt, reusable = task.system_tokens + task.task_tokens, 0
        prev_tool = ""
        for k, step in enumerate(task.steps):
            finish = t + base_latency_s + decode_s_per_token * step.output_tokens
            # An agent's loop ends when the model answers without calling a tool: the last call says `stop`.
            name = step.tool_name if k < len(task.steps) - 1 else ""
            calls.append(
                TraceCall(
                    task.session_id, task.agent_type, k, k == len(task.steps) - 1, t, finish, prompt,
                    reusable, step.output_tokens, "tool_calls" if name else "stop", (name,) if name else (),
                    (prev_tool,) if prev_tool and not task.replace_history else (),
                )
            )  # fmt: skip
            prev_tool = name
            t = finish + step.tool_time_s
            kept = prompt + step.output_tokens
            compact = getattr(step, "compact_to_tokens", None)  # compaction keeps the first N tokens
            if compact is not None and not task.replace_history:
                prompt, reusable = compact + step.observation_tokens, compact
            elif task.replace_history:
                prompt, reusable = task.system_tokens + step.observation_tokens, task.system_tokens
            else:
                prompt, reusable = kept + step.observation_tokens, kept
        for a, b in itertools.pairwise(calls):
            a.next_arrival = b.arrival
        output_after = 0
        for c in reversed(calls):
            c.calls_after = len(calls) - c.index - 1
            c.final_prompt = calls[-1].prompt
            c.output_after = output_after
            output_after += c.output
        shapes.append(calls)
    durations = [s[-1].finish for s in shapes if s]
    rate = concurrency / max(1e-9, statistics.mean(durations)) if durations else 1.0
    rng = random.Random(seed ^ 0x7E1)
    start = 0.0
    for task, calls in zip(tasks, shapes, strict=True):
        start += rng.expovariate(rate)
        begin = task.arrival_s if task.arrival_s is not None else start
        for c in calls:
            c.arrival += begin
            c.finish += begin
            c.next_arrival += begin
    return shapes


def with_session_speeds(tasks: Sequence[AgentTask], sigma: float, *, seed: int) -> list[AgentTask]:
    """Each task's tool and think times scaled by its own factor e^N(0, sigma): sessions that are
    consistently slow or fast, which a per-session feature could learn (the workloads draw every gap
    independently given the tool)."""
    rng = random.Random(seed ^ 0x5EED)
    out = []
    for task in tasks:
        k = math.exp(rng.gauss(0.0, sigma))
        steps = [msgspec.structs.replace(step, tool_time_s=step.tool_time_s * k) for step in task.steps]
        out.append(msgspec.structs.replace(task, steps=steps))
    return out


def _events(sessions: Sequence[Sequence[TraceCall]]) -> list[tuple[float, int, TraceCall]]:
    """(time, 0 = finish / 1 = arrival, call) in time order; at a tie, ends before starts."""
    events = [(c.arrival, 1, c) for s in sessions for c in s] + [
        (c.finish, 0, c) for s in sessions for c in s
    ]
    events.sort(key=lambda e: (e[0], e[1], e[2].session_id, e[2].index))
    return events


def waiting_working_set(sessions: Sequence[Sequence[TraceCall]]) -> tuple[float, int]:
    """(time-averaged, peak) tokens of the prefixes of sessions waiting between calls."""
    points: list[tuple[float, int]] = []
    for s in sessions:
        for c in s:
            if not c.last:
                points += [(c.finish, c.prompt + c.output), (c.next_arrival, -(c.prompt + c.output))]
    if not points:
        return 0.0, 0
    points.sort()
    area, level, peak, t0 = 0.0, 0, 0, points[0][0]
    for t, delta in points:
        area += level * (t - t0)
        level += delta
        peak = max(peak, level)
        t0 = t
    span = points[-1][0] - points[0][0]
    return (area / span if span > 0 else float(peak)), peak


# -- cache policies ------------------------------------------------------------------------------------


class CachePolicy(Protocol):
    name: str

    def arrive(self, call: TraceCall, now: float) -> int: ...
    def finish(self, call: TraceCall, now: float) -> None: ...


class _LedgerPolicy:
    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.ledger = RetentionLedger(capacity)

    def arrive(self, call: TraceCall, now: float) -> int:
        self.ledger.advance(now)
        return self.ledger.take(call.session_id)


class LruPolicy(_LedgerPolicy):
    def finish(self, call: TraceCall, now: float) -> None:
        self.ledger.insert(call.session_id, call.prompt + call.output, now, 0.0, 0.0)


class FixedTtlPolicy(_LedgerPolicy):
    def __init__(self, name: str, capacity: int, ttl_s: float) -> None:
        super().__init__(name, capacity)
        self.ttl_s = ttl_s

    def finish(self, call: TraceCall, now: float) -> None:
        self.ledger.insert(call.session_id, call.prompt + call.output, now, self.ttl_s, -now)


class BeladyPolicy(_LedgerPolicy):
    """Offline: every entry pinned, keyed by its session's true next arrival (inf when there is none)."""

    def finish(self, call: TraceCall, now: float) -> None:
        self.ledger.insert(call.session_id, call.prompt + call.output, now, math.inf, call.next_arrival)


def _state(call: TraceCall) -> tuple[str, str]:
    return call.agent_type, call.tool_names[0] if call.tool_names else call.finish_reason


class StateOraclePolicy:
    """The `saga` ranking on each state's true gap and end distribution, from the whole trace (hindsight)."""

    def __init__(self, capacity: int, sessions: Sequence[Sequence[TraceCall]]) -> None:
        self.name = "state-oracle"
        gaps: dict[tuple[str, str], LogSketch] = {}
        calls: dict[tuple[str, str], int] = {}
        ends: dict[tuple[str, str], int] = {}
        for s in sessions:
            for c in s:
                key = _state(c)
                calls[key] = calls.get(key, 0) + 1
                if c.last:
                    ends[key] = ends.get(key, 0) + 1
                else:
                    gaps.setdefault(key, seconds_sketch()).add(max(0.0, c.next_arrival - c.finish))
        never = seconds_sketch()
        never.add(1.0)
        self.never = ReturnModel(never, 1.0)
        self.gap_sketches = gaps
        self.models = {
            k: ReturnModel(gaps[k], ends.get(k, 0) / n) if k in gaps else self.never for k, n in calls.items()
        }
        self._held: dict[str, tuple[ReturnModel, float]] = {}
        self.ledger = RetentionLedger(capacity, scorer=self._score)

    def _score(self, session_id: str, now: float) -> float:
        model, since = self._held[session_id]
        return 1.0 / max(model.hit_rate(max(0.0, now - since)), 1e-12)

    def arrive(self, call: TraceCall, now: float) -> int:
        self._held.pop(call.session_id, None)
        return self.ledger.take(call.session_id)

    def finish(self, call: TraceCall, now: float) -> None:
        self._held[call.session_id] = (self.models[_state(call)], now)
        for sid in self.ledger.insert(call.session_id, call.prompt + call.output, now, math.inf, 0.0):
            self._held.pop(sid, None)


class SagaPolicy:
    def __init__(self, capacity: int, params: RetentionParams, tick_s: float = 1.0) -> None:
        self.name = "saga"
        self.predictor = Predictor()
        self.retention = PredictedRetention(self.predictor, capacity, params)
        self.tick_s = tick_s
        self._next_tick = 0.0

    def _tick(self, now: float) -> None:
        if now >= self._next_tick:
            for sid in self.predictor.tick(now):
                self.retention.session_ended(sid)
            self._next_tick = now + self.tick_s

    def arrive(self, call: TraceCall, now: float) -> int:
        self._tick(now)
        self.predictor.call_arrived(call.session_id, call.agent_type, now, call.prompt, call.request_tools)
        return self.retention.on_arrival(call.session_id, now)

    def finish(self, call: TraceCall, now: float) -> None:
        self._tick(now)
        self.predictor.call_finished(
            call.session_id, now, call.prompt, call.output, call.finish_reason, call.tool_names
        )
        self.retention.after_call(call.session_id, now, call.prompt + call.output)


class Recompute(msgspec.Struct):
    recomputed: int = 0  # every prefill token computed
    avoidable: int = 0  # of those, tokens a retained prefix could have covered


def replay(events: Sequence[tuple[float, int, TraceCall]], policy: CachePolicy) -> Recompute:
    out = Recompute()
    for now, kind, call in events:
        if kind == 0:
            policy.finish(call, now)
            continue
        found = policy.arrive(call, now)
        reused = min(found, call.reusable)
        out.recomputed += call.prompt - reused
        out.avoidable += call.reusable - reused
    return out


# -- prediction quality --------------------------------------------------------------------------------


def prediction_quality(
    events: Sequence[tuple[float, int, TraceCall]], tick_s: float = 1.0, config: PredictorConfig | None = None
) -> dict[str, Any]:
    predictor = Predictor(config)
    cfg = predictor.config
    quantiles = predictor.config.quantiles
    hits = [0] * len(quantiles)
    returned = 0
    brier: list[float] = []
    ends: list[int] = []
    prompt_err: list[float] = []
    remaining_err: list[float] = []
    remaining_signed: list[float] = []
    service_err: list[float] = []
    peak_err: list[float] = []
    peak_signed: list[float] = []
    peak_err_now: list[float] = []  # a baseline: the peak is the prompt already reached
    truth_remaining: list[int] = []
    predicted_remaining: list[float] = []
    cold = 0
    pending: dict[str, tuple[TraceCall, Any]] = {}
    next_tick = 0.0
    for now, kind, call in events:
        if now >= next_tick:
            predictor.tick(now)
            next_tick = now + tick_s
        if kind == 1:
            predictor.call_arrived(call.session_id, call.agent_type, now, call.prompt, call.request_tools)
            got = pending.pop(call.session_id, None)
            if got is not None:
                prev, pred = got
                gap = call.arrival - prev.finish
                returned += 1
                for i, g in enumerate(pred.return_gap_s):
                    hits[i] += gap <= g
                prompt_err.append(abs(pred.next_prompt_tokens - call.prompt) / max(1, call.prompt))
            continue
        predictor.call_finished(
            call.session_id, now, call.prompt, call.output, call.finish_reason, call.tool_names
        )
        pred = predictor.predict(call.session_id, now)
        if pred is None:
            continue
        cold += pred.cold
        brier.append((pred.p_end - call.last) ** 2)
        ends.append(call.last)
        remaining_err.append(abs(pred.remaining_calls - call.calls_after))
        remaining_signed.append(pred.remaining_calls - call.calls_after)
        true_service = (call.final_prompt - call.prompt) * cfg.prefill_s_per_token + (
            call.output_after * cfg.decode_s_per_token
        )
        service_err.append(abs(pred.remaining_service_s - true_service))
        peak_err.append(abs(pred.peak_prompt_tokens - call.final_prompt) / max(1, call.final_prompt))
        peak_signed.append((pred.peak_prompt_tokens - call.final_prompt) / max(1, call.final_prompt))
        peak_err_now.append(abs(call.final_prompt - call.prompt) / max(1, call.final_prompt))
        truth_remaining.append(call.calls_after)
        predicted_remaining.append(pred.remaining_calls)
        if not call.last:
            pending[call.session_id] = (call, pred)
    end_rate = statistics.mean(ends) if ends else 0.0
    return {
        "predictions": len(brier),
        "cold_share": round(cold / max(1, len(brier)), 4),
        "coverage": {
            f"p{round(q * 100)}": round(h / max(1, returned), 4) for q, h in zip(quantiles, hits, strict=True)
        },
        "brier_end": round(statistics.mean(brier), 5) if brier else None,
        "brier_end_constant": round(end_rate * (1 - end_rate), 5),
        "next_prompt_rel_error_median": round(statistics.median(prompt_err), 4) if prompt_err else None,
        "next_prompt_rel_error_mean": round(statistics.mean(prompt_err), 4) if prompt_err else None,
        "remaining_calls_mae": _mean(remaining_err, 3),
        "remaining_calls_bias": _mean(remaining_signed, 3),
        # Baseline: the best constant in hindsight (the median of the true remaining calls).
        "remaining_calls_mae_constant": _mean(
            [abs(t - statistics.median(truth_remaining)) for t in truth_remaining], 3
        ),
        # What an order by least remaining work needs: does the prediction rank sessions right?
        "remaining_calls_spearman": _spearman(predicted_remaining, truth_remaining),
        "remaining_service_mae_s": _mean(service_err, 3),
        "peak_prompt_rel_error_median": round(statistics.median(peak_err), 4) if peak_err else None,
        "peak_prompt_rel_error_mean": _mean(peak_err, 4),
        "peak_prompt_rel_bias": _mean(peak_signed, 4),
        "peak_prompt_rel_error_median_no_growth": round(statistics.median(peak_err_now), 4)
        if peak_err_now
        else None,
    }


def _ranks(xs: Sequence[float]) -> list[float]:
    """Ranks (ties share their mean rank)."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def _spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    if len(xs) < 3:
        return None
    try:
        return round(statistics.correlation(_ranks(xs), _ranks(ys)), 4)
    except statistics.StatisticsError:  # a constant series
        return None


def _mean(xs: Sequence[float], digits: int) -> float | None:
    return round(statistics.mean(xs), digits) if xs else None


# -- the command ---------------------------------------------------------------------------------------


def add_predictor_parser(modes: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = modes.add_parser("predictor", help="prediction quality and KV retention against Bélády's optimum")
    p.add_argument("--workload", choices=WORKLOADS, default="swe", help="the agent workload")
    p.add_argument("--tasks", type=at_least(1), default=400, help="sessions to generate")
    p.add_argument("--trace", type=input_file, help="replay sessions from a CSV trace instead of generating")
    p.add_argument(
        "--concurrency", type=positive, default=64, help="mean live sessions (sets the arrival rate)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the tasks")
    p.add_argument(
        "--cache-fractions", type=number_list(non_negative), default="0.1,0.25,0.5,1.0",
        help="cache sizes as fractions of the time-averaged working set of waiting sessions",
    )  # fmt: skip
    p.add_argument(
        "--cache-tokens", type=number_list(non_negative), default="",
        help="cache sizes in tokens (overrides --cache-fractions)",
    )  # fmt: skip
    p.add_argument("--fixed-ttl", type=positive, default=10.0, help="TTL of the fixed-TTL baseline (s)")
    p.add_argument(
        "--noise-sigmas", type=number_list(non_negative), default="0.5,1.0",
        help="references: Bélády told each gap up to a log-normal factor of these sigmas ('' for none)",
    )  # fmt: skip
    p.add_argument(
        "--session-speed-sigma", type=non_negative, default=0.0,
        help="scale each generated session's tool and think times by its own log-normal factor of this sigma "
        "(per-session information the generated workloads do not carry; 0: none)",
    )  # fmt: skip
    p.add_argument(
        "--session-scale-weight", type=non_negative, default=None,
        help="RetentionParams.session_scale_weight for saga (pseudo-gaps; 0 off; default: the policy's)",
    )  # fmt: skip
    p.add_argument("--json", type=output_file, help="write the results as JSON here")


def run_predictor_bench(args: argparse.Namespace) -> dict[str, Any]:
    tasks = (
        load_trace(args.trace)[: args.tasks]
        if args.trace
        else generate(args.workload, args.tasks, seed=args.seed)
    )
    if args.session_speed_sigma > 0:
        tasks = with_session_speeds(tasks, args.session_speed_sigma, seed=args.seed)
    sessions = [s for s in build_trace(tasks, concurrency=args.concurrency, seed=args.seed) if s]
    events = _events(sessions)
    mean_ws, peak_ws = waiting_working_set(sessions)
    if args.cache_tokens:
        sizes = [int(x) for x in args.cache_tokens]
    else:
        sizes = [int(f * mean_ws) for f in args.cache_fractions]
    # Imported here: the references build on this module's policies.
    from loadtests.bench.predictor_references import EndOraclePolicy, NoisyBeladyPolicy, gap_information

    sigmas = list(args.noise_sigmas)
    params = RetentionParams()
    if args.session_scale_weight is not None:
        params = msgspec.structs.replace(params, session_scale_weight=args.session_scale_weight)
    rows = []
    worst, worst_total = 0.0, 0.0
    for capacity in sizes:
        policies: list[CachePolicy] = [
            BeladyPolicy("belady", capacity),
            SagaPolicy(capacity, params),
            LruPolicy("lru", capacity),
            FixedTtlPolicy(f"fixed-ttl-{args.fixed_ttl:g}s", capacity, args.fixed_ttl),
            StateOraclePolicy(capacity, sessions),
            EndOraclePolicy(capacity, sessions),
            *(NoisyBeladyPolicy(capacity, sigma, seed=args.seed) for sigma in sigmas),
        ]
        result = {p.name: replay(events, p) for p in policies}
        best, ours = result["belady"], result["saga"]
        ratio = ours.avoidable / best.avoidable if best.avoidable else 1.0
        ratio_total = ours.recomputed / best.recomputed if best.recomputed else 1.0
        worst, worst_total = max(worst, ratio), max(worst_total, ratio_total)
        rows.append(
            {
                "capacity_tokens": capacity,
                "fraction_of_working_set": round(capacity / mean_ws, 3) if mean_ws else None,
                "policies": {k: msgspec.to_builtins(v) for k, v in result.items()},
                "saga_over_belady": round(ratio, 4),
                "lru_over_belady": round(result["lru"].avoidable / max(1, best.avoidable), 4),
                "state_oracle_over_belady": round(
                    result["state-oracle"].avoidable / max(1, best.avoidable), 4
                ),
                "saga_over_belady_total": round(ratio_total, 4),
                "over_belady": {
                    k: round(v.avoidable / best.avoidable, 4) if best.avoidable else 1.0
                    for k, v in result.items()
                },
            }
        )
    return {
        "workload": f"trace {args.trace.name}" if args.trace else args.workload,
        "command": recorded_command(),
        "date": datetime.date.today().isoformat(),
        "machine": machine_description(),
        "sessions": len(sessions),
        "calls": sum(len(s) for s in sessions),
        "prompt_tokens": sum(c.prompt for s in sessions for c in s),
        "cold_first_prompt_tokens": sum(s[0].prompt for s in sessions),
        "working_set_tokens": {"mean": round(mean_ws), "peak": peak_ws},
        "quality": prediction_quality(events),
        "gap_information": gap_information(sessions),
        "cache": rows,
        "belady_ratio": round(worst, 4),
        "belady_ratio_total": round(worst_total, 4),
    }


def summary_markdown(result: dict[str, Any]) -> str:
    """The cache table (avoidable recomputed tokens per policy, and saga / Bélády) and the quality line."""
    names = list(result["cache"][0]["policies"]) if result["cache"] else []
    ws = result["working_set_tokens"]
    lines = [
        f"{result['workload']}: {result['sessions']} sessions, {result['calls']} calls, waiting working set "
        f"mean {ws['mean']:,} tokens (peak {ws['peak']:,})",
        "",
        "| cache tokens (x mean working set) | "
        + " | ".join(names)
        + " | saga / belady | lru / belady | state-oracle / belady |",
        "|---" * (len(names) + 4) + "|",
    ]
    for row in result["cache"]:
        cells = " | ".join(f"{row['policies'][n]['avoidable']:,}" for n in names)
        size = f"{row['capacity_tokens']:,} ({row['fraction_of_working_set']})"
        ratios = (
            f"{row['saga_over_belady']:.3f} | {row['lru_over_belady']:.3f} | "
            f"{row['state_oracle_over_belady']:.3f}"
        )
        lines.append(f"| {size} | {cells} | {ratios} |")
    lines += [
        "",
        "",
        *(
            f"over belady at {row['fraction_of_working_set']}x: "
            + ", ".join(f"{k} {v:.3f}" for k, v in row["over_belady"].items() if k != "belady")
            for row in result["cache"]
        ),
        "gap information (Spearman within a state): "
        + msgspec.json.encode(result["gap_information"]).decode(),
        f"belady_ratio {result['belady_ratio']} (all prefill tokens: {result['belady_ratio_total']})",
        "quality: " + msgspec.json.encode(result["quality"]).decode(),
    ]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    try:
        result = run_predictor_bench(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary_markdown(result))
    if args.json:
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode(result)) + b"\n")
        print(f"results: {args.json}")
    return 0
