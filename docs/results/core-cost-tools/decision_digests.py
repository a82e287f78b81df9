"""A digest of every decision `saga bench core` makes (each event's decisions, the retentions released, the
replicas' final accounts and the core's snapshot), per policy and setting: a decision-neutral change prints
the same digests, compiled and with SAGA_PURE_PYTHON=1 (round 7 of docs/results/core-cost.md).

Run from the repository root: `python3 docs/results/core-cost-tools/decision_digests.py`.
"""

import hashlib

import proxy.scheduler.core as core_mod
from loadtests.bench import core as bench

cores = []


class Core(core_mod.SchedulerCore):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.digest = hashlib.sha256()
        cores.append(self)

    def _log(self, decisions):
        for d in decisions:
            self.digest.update(repr(d).encode())
        return decisions

    def request_arrived(self, req):
        return self._log(super().request_arrived(req))

    def request_finished(self, rid, usage=None):
        decisions = self._log(super().request_finished(rid, usage))
        self.digest.update(repr(self.take_releases()).encode())
        return decisions

    def replica_stats(self, stats):
        return self._log(super().replica_stats(stats))

    def tick(self):
        return self._log(super().tick())

    def session_ended(self, session_id):
        return self._log(super().session_ended(session_id))


bench.SchedulerCore = Core
for policy in ("saga", "session-affinity", "prefix-load", "least-request"):
    for new in (0.0, 0.05):
        for queue in (False, True):
            if policy != "saga" and queue:
                continue
            bench.bench_core(
                policy,
                queue=queue,
                replicas=64,
                sessions=2000,
                calls=6000,
                warmup=3000,
                in_flight=256,
                new_workflows=new,
            )
            core = cores[-1]
            accounts = sorted((k, v.in_flight, v.reserved_tokens) for k, v in core.replicas.items())
            core.digest.update((repr(accounts) + repr(core.snapshot())).encode())
            print(f"{policy:18s} new={new} queue={queue} {core.digest.hexdigest()[:24]}", flush=True)
