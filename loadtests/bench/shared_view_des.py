"""`python -m loadtests.bench.shared_view_des`: N workers' scheduling in the discrete-event cluster, with and
without the shared view of replica load (proxy/load_sync.py), against one core.

`saga serve --workers N` gives each session to one worker (`owner_of`), whose core sees only its own
workflows. Here the cluster drives `WorkerCores`: N cores behind the one-core interface, each event going to
the core that owns its session. With `shared`, a sync runs every `sync_s` of virtual time (as the workers'
loop runs every period, events or not; also at an event once `sync_s` has passed): each core in turn is told
the others' totals per replica through `SchedulerCore.foreign_load`, the figures `own_load` gives as they are
at that moment (the table itself is not simulated), and the others' waiting workflows and admissions so far
(`foreign_waiting`: admission's turns between workers; `turns=False` leaves them out), their calls held and
released per replica (`foreign_lanes`: the release queue's turns) and their tenants (`foreign_tenants`).
With `share_learning`, in the same sync each core also replays what the others' predictors learned since the
last
(`Predictor.take_learned` / `learn`: what proxy/load_sync.py does through proxy/shared_learning.py).
`exact_admission` is an experiment `saga serve` does not run (docs/saga-policy.md, "Several workers"): a new
workflow's first call, and a call's end while workflows wait, first read the other cores' figures as they are
then, so no two workers admit into the same room. `one_predictor` gives every core the same `Predictor` (a
diagnostic: as if the workers shared one predictor, sessions and all).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable

import msgspec

from loadtests.des.cluster import Cluster
from loadtests.des.fingerprint import CASES
from loadtests.des.result import ClusterConfig, ClusterResult
from loadtests.workloads.swe import swe_tasks
from predictor import Predictor
from proxy.scheduler import Decision, ReplicaStats, RequestInfo, SchedulerCore, Usage, build_policy
from proxy.worker_set import owner_of


class WorkerCores(SchedulerCore):
    """N worker cores, each scheduling the sessions it owns, in place of the cluster's one core."""

    def __init__(
        self,
        replicas: Iterable[str],
        config: ClusterConfig,
        clock: Callable[[], float],
        workers: int,
        sync_s: float | None,
        one_predictor: bool = False,
        share_learning: bool = False,
        exact_admission: bool = False,
        turns: bool = True,
    ) -> None:
        ids = list(replicas)
        super().__init__(ids, build_policy(config.policy, seed=config.seed), clock)
        shared = Predictor() if one_predictor else None
        self.cores = [
            SchedulerCore(
                ids,
                build_policy(config.policy, seed=config.seed + i),
                clock,
                session_idle_ttl_s=config.session_idle_ttl_s,
                predictor=shared,
            )
            for i in range(workers)
        ]
        self.replicas = self.cores[0].replicas  # the cluster's progress reads the replicas' gauges here
        self.share_learning = share_learning and not one_predictor
        self.exact_admission = exact_admission
        self.turns = turns  # each core told how many workflows the others with some waiting admitted
        if self.share_learning:
            for core in self.cores:
                core.predictor.keep_learned()
        self.sync_s = sync_s  # None: the workers do not share their load
        self._synced_at = -1e18
        self._worker_of: dict[str, int] = {}  # request id -> the worker that scheduled it

    def _sync(self) -> list[Decision]:
        """Every `sync_s`: tell each core the other cores' reservations and calls per replica."""
        now = self.clock()
        if self.sync_s is None or now - self._synced_at < self.sync_s:
            return []
        self._synced_at = now
        if self.share_learning:
            learned = [core.predictor.take_learned() for core in self.cores]
            for i, core in enumerate(self.cores):
                core.predictor.learn([o for j, batch in enumerate(learned) if j != i for o in batch])
        decisions: list[Decision] = []
        for i in range(len(self.cores)):
            decisions += self._refresh(i)
        return decisions

    def _refresh(self, i: int) -> list[Decision]:
        """Tell core `i` the other cores' reservations, calls and waiting workflows as they are now."""
        loads = [core.own_load() for core in self.cores]
        own = [{rid: (res, fl) for rid, res, fl, _, _ in load} for load in loads]
        waiting = [core.own_waiting() for core in self.cores]
        core = self.cores[i]
        lanes: dict[str, dict[int, int]] = {}  # the others holding calls per replica: their releases so far
        for j, load in enumerate(loads):
            for rid, _, _, held, released in load:
                if j != i and held:
                    lanes.setdefault(rid, {})[j] = released
        mine = set(core.own_tenants(1 << 30)[1])
        others = {t for j, other in enumerate(self.cores) if j != i for t in other.own_tenants(1 << 30)[1]}
        core.foreign_tenants(len(others - mine))
        turns = (
            {j: other.own_admitted() for j, other in enumerate(self.cores) if j != i and waiting[j]}
            if self.turns
            else None
        )
        decisions: list[Decision] = []
        for rid in core.replicas:
            reserved = sum(own[j][rid][0] for j in range(len(self.cores)) if j != i)
            in_flight = sum(own[j][rid][1] for j in range(len(self.cores)) if j != i)
            decisions += self._mine(i, core.foreign_load(rid, reserved, in_flight))
        decisions += self._mine(i, core.foreign_lanes(lanes))
        return decisions + self._mine(i, core.foreign_waiting(sum(waiting) - waiting[i], turns))

    def _mine(self, worker: int, decisions: list[Decision]) -> list[Decision]:
        for d in decisions:
            self._worker_of[d.request_id] = worker
        return decisions

    def request_arrived(self, req: RequestInfo) -> list[Decision]:
        worker = owner_of(req.session_id, len(self.cores))
        self._worker_of[req.request_id] = worker
        decisions = self._sync()
        core = self.cores[worker]
        admission = core.admission
        if (
            self.exact_admission
            and admission is not None
            and req.session_id not in admission.workflows
            and not admission.is_waiting(req.session_id)
        ):  # the experiment: a new workflow is admitted on the others' figures read now
            decisions += self._refresh(worker)
        return decisions + self._mine(worker, core.request_arrived(req))

    def first_token(self, request_id: str) -> list[Decision]:
        return self.cores[self._worker_of[request_id]].first_token(request_id)

    def request_finished(self, request_id: str, usage: Usage | None = None) -> list[Decision]:
        worker = self._worker_of.pop(request_id)
        decisions = self._sync()
        admission = self.cores[worker].admission
        if self.exact_admission and admission is not None and len(admission.waiting):
            decisions += self._refresh(worker)  # the experiment: read before the end may admit
        return decisions + self._mine(worker, self.cores[worker].request_finished(request_id, usage))

    def take_releases(self) -> list[tuple[str, str]]:
        return [r for core in self.cores for r in core.take_releases()]

    def replica_stats(self, stats: ReplicaStats) -> list[Decision]:
        decisions = self._sync()
        for i, core in enumerate(self.cores):
            decisions += self._mine(i, core.replica_stats(stats))
        return decisions

    def tick(self, lapse_limit: int = 0) -> list[Decision]:
        decisions = self._sync()
        for i, core in enumerate(self.cores):
            decisions += self._mine(i, core.tick(lapse_limit))
        return decisions


# The fingerprint's KV-short saga case with four times the tasks: long enough for each worker's predictor to
# learn the agent type from its quarter of the sessions.
LONGER = {"swe-saga-kv-short-160": (lambda: swe_tasks(160, seed=8), CASES["swe-saga-kv-short"][1])}


def run(
    case: str,
    workers: int,
    sync_s: float | None,
    one_predictor: bool,
    share_learning: bool = False,
    exact_admission: bool = False,
    turns: bool = True,
) -> tuple[ClusterResult, float]:
    make_tasks, config = {**CASES, **LONGER}[case]
    cluster = Cluster(make_tasks(), config)
    if workers > 1:
        cores = WorkerCores(
            cluster.replicas,
            config,
            cluster.queue,
            workers,
            sync_s,
            one_predictor,
            share_learning,
            exact_admission,
            turns,
        )
        cluster.core = cores
        if sync_s is not None:  # every period of virtual time, events or not, as the workers' loop runs
            period = sync_s

            def sync(_: None) -> None:
                cluster._apply(cores._sync())
                if not cluster._done:
                    cluster.queue.schedule(cluster.queue.now + period, sync, None)

            cluster.queue.schedule(0.0, sync, None)
    started = time.perf_counter()
    result = cluster.run()
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="swe-saga-kv-short,tight-saga-open")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--sync-s", type=float, default=0.015)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    rows = []
    for case in args.cases.split(","):
        shared = f"{args.workers} workers, shared every {args.sync_s * 1000:g} ms"
        for label, workers, sync_s, one_predictor, learning, split in (
            ("one core", 1, None, False, False, False),
            (f"{args.workers} workers, apart", args.workers, None, False, False, False),
            (f"{shared}, load only", args.workers, args.sync_s, False, False, False),
            (f"{shared}, load and learned graphs", args.workers, args.sync_s, False, True, False),
            (
                f"{shared}, load, learned graphs, exact admission",
                args.workers,
                args.sync_s,
                False,
                True,
                True,
            ),
            (f"{shared}, one predictor", args.workers, args.sync_s, True, False, False),
        ):
            result, wall = run(case, workers, sync_s, one_predictor, learning, split)
            s = result.summary()
            row = {
                "case": case,
                "scheduling": label,
                "tasks": s.tasks,
                "failed": s.failed,
                "tct_mean_s": round(s.tct_mean_s, 2),
                "tct_p90_s": round(s.tct_p90_s, 2),
                "duration_s": round(result.duration_s, 1),
                "preemptions": sum(r.preemptions for r in result.replicas),
                "prefix_hit_rate": round(result.prefix_hit_rate(), 3),
                "wall_s": round(wall, 1),
            }
            print(" | ".join(f"{v}" for v in row.values()), flush=True)
            # TCT figures are over the completed tasks: which failed, and why, so rows compare like with like
            row["failed_tasks"] = [i for i, task in enumerate(result.tasks) if task.failed]
            row["failed_reasons"] = s.failed_reasons
            rows.append(row)
    if args.json:
        with open(args.json, "wb") as f:
            f.write(msgspec.json.format(msgspec.json.encode(rows)))


if __name__ == "__main__":
    main()
