"""What the slowest 1% of `saga bench core`'s *timed* calls did (compiled or pure; round 7 of
docs/results/core-cost.md).

Each timed call's three events are timed here (CPU ns) and flagged by what they did, seen from the state
around each event: `model` (the predictor built a return model), `answer` (the retention priced a new model),
`solve` (a graph re-solved its chain), `route` (the policy scored candidates: a new workflow), `moved` (work
stealing moved it), `over` (its replica's reservations exceed its capacity: a rebalancing scan), `backlog`
(its replica has calls waiting: stealing's test), `fault` (a page fault), `csw` (a context switch), `gc`.
Prints each flag's share of all calls and of the slowest 1%, and with `--runs N` each call's least time
over N identical runs (the host's delays rarely hit one call twice).

Run from the repository root: `python3 docs/results/core-cost-tools/slow_call_flags.py [--new-workflows F]
[--runs N]`. (slow_calls.py, beside it, profiles every call of the bench, the 10,000 untimed first calls that
make the sessions live included: its slow arrivals are mostly those.)
"""

import argparse
import collections
import gc
import resource
import time

import proxy.scheduler.core as core_mod
from loadtests.bench import core as bench

SESSIONS, WARMUP, CALLS = 10_000, 10_000, 20_000
FIRST_TIMED = SESSIONS + WARMUP  # request ids r0.. r19999 are the untimed calls
args_parser = argparse.ArgumentParser()
args_parser.add_argument("--new-workflows", type=float, default=0.0)
args_parser.add_argument("--runs", type=int, default=1)
ARGS = args_parser.parse_args()


def snapshot(core):
    p, pol = core.predictor, core.policy
    return (
        [id(v) for v in p._models.values()],
        sum(g._remaining_at for g in p.graphs.values()),
        core.moves,
        len(pol.retention.answers.answers),
        core.route_calls,
    )


def one_run():
    cost = collections.defaultdict(int)
    flags = collections.defaultdict(set)
    in_gc = [False]

    def on_gc(phase, info):
        if phase == "start":
            in_gc[0] = True

    gc.callbacks.append(on_gc)

    def wrap(kind, orig, rid_of):
        def event(self, *a, **k):
            rid = rid_of(a)
            if int(rid[1:]) < FIRST_TIMED:
                return orig(self, *a, **k)
            f = flags[rid]
            if kind == "arr":
                wf = self.admission.workflows.get(a[0].session_id)
                bound = self.replicas.get(wf.replica_id) if wf is not None else None
                if bound is not None and (bound.waiting or bound.queued):
                    f.add("arr:backlog")
                if bound is not None and bound.reserved_tokens > bound.kv_capacity_tokens:
                    f.add("arr:over")
            before = snapshot(self)
            ru0 = resource.getrusage(resource.RUSAGE_THREAD)
            in_gc[0] = False
            t = time.thread_time_ns()
            result = orig(self, *a, **k)
            cost[rid] += time.thread_time_ns() - t
            ru1 = resource.getrusage(resource.RUSAGE_THREAD)
            after = snapshot(self)
            for i, name in enumerate(("model", "solve", "moved", "answer", "route")):
                if before[i] != after[i]:
                    f.add(f"{kind}:{name}")
            if ru1.ru_minflt != ru0.ru_minflt:
                f.add(f"{kind}:fault")
            if ru1.ru_nivcsw != ru0.ru_nivcsw or ru1.ru_nvcsw != ru0.ru_nvcsw:
                f.add(f"{kind}:csw")
            if in_gc[0]:
                f.add(f"{kind}:gc")
            return result

        return event

    class Core(core_mod.SchedulerCore):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.route_calls = 0
            route = self.policy.route

            def counted(req, replicas):
                self.route_calls += 1
                return route(req, replicas)

            self.policy.route = counted

    base = core_mod.SchedulerCore
    Core.request_arrived = wrap("arr", base.request_arrived, lambda a: a[0].request_id)
    Core.first_token = wrap("first", base.first_token, lambda a: a[0])
    Core.request_finished = wrap("fin", base.request_finished, lambda a: a[0])
    bench.SchedulerCore = Core
    bench.bench_core(
        "saga",
        queue=False,
        replicas=64,
        sessions=SESSIONS,
        calls=CALLS,
        warmup=WARMUP,
        in_flight=256,
        new_workflows=ARGS.new_workflows,
    )
    gc.callbacks.remove(on_gc)
    return cost, flags


runs = [one_run() for _ in range(ARGS.runs)]
cost, flags = runs[0]
if ARGS.runs > 1:
    cost = {rid: min(c[rid] for c, _ in runs) for rid in cost}
    flags = {rid: set.intersection(*(f[rid] for _, f in runs)) for rid in cost}
rids = sorted(cost, key=cost.get)
n = len(rids)
top = rids[-max(1, n // 100) :]
label = f"each call's least over {ARGS.runs} runs" if ARGS.runs > 1 else "one run"
p50, p99 = cost[rids[n // 2]] / 1000, cost[rids[int(n * 0.99)]] / 1000
print(f"{n} timed calls ({label}): p50 {p50:.1f} µs, p99 {p99:.1f}")
every = collections.Counter(f for r in rids for f in flags[r])
slow = collections.Counter(f for r in top for f in flags[r])
print(f"{'flag':14s} {'% of calls':>10s} {'% of top 1%':>11s}  mean µs with / without")
for flag in sorted(every, key=lambda f: -slow[f]):
    with_flag = [cost[r] for r in rids if flag in flags[r]]
    without = [cost[r] for r in rids if flag not in flags[r]] or [0]
    print(
        f"{flag:14s} {100 * every[flag] / n:10.2f} {100 * slow[flag] / len(top):11.1f}  "
        f"{sum(with_flag) / len(with_flag) / 1000:6.1f} / {sum(without) / len(without) / 1000:6.1f}"
    )
