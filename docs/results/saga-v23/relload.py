"""`saga` with its load scored relative to the least-loaded candidate, (1 + least) / (1 + load), instead of
1 / (1 + load) (an experiment, not a policy). With a dozen calls per replica the latter barely tells replicas
apart (1/13 against 1/15), so KV headroom decides where a new workflow goes.

    python3 docs/results/saga-v23/relload.py des VARIANT... -- SAGA_BENCH_DES_ARGS...
    python3 docs/results/saga-v23/relload.py fairness --policy x-rel1 SAGA_BENCH_FAIRNESS_ARGS...

VARIANT: `saga`, or `x-rel1` (the least-request scorer replaced by this one at the same weight, 1.0).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

import msgspec

from loadtests.bench import ablation
from proxy.cli import main
from proxy.scheduler import plugin_spec, registry
from proxy.scheduler.framework import Scorer, by_replica
from proxy.scheduler.plugin_spec import PluginSpec
from proxy.scheduler.types import ReplicaId, ReplicaView, RequestInfo


class RelativeLoadScorer(Scorer):
    type_name = "relative-load-scorer"

    def score(self, req: RequestInfo, replicas: Sequence[ReplicaView]) -> Mapping[ReplicaId, float]:
        return by_replica(replicas, self.score_each(req, replicas))

    def score_each(self, req: RequestInfo, replicas: Sequence[ReplicaView]) -> list[float]:
        loads = [r.in_flight + r.queued + r.waiting for r in replicas]
        least = min(loads, default=0)
        return [(1.0 + least) / (1.0 + load) for load in loads]


SAGA = registry.PRESETS["saga"]
LOAD = "least-request-scorer"
SCORERS = [PluginSpec("relative-load-scorer", s.weight) if s.type == LOAD else s for s in SAGA.scorers]

if __name__ == "__main__":
    plugin_spec.PLUGIN_TYPES["relative-load-scorer"] = RelativeLoadScorer
    ablation.ABLATIONS["x-rel1"] = {"scorers": SCORERS}
    registry.PRESETS["x-rel1"] = msgspec.structs.replace(SAGA, scorers=SCORERS)
    mode, *rest = sys.argv[1:]
    if mode == "des":
        split = rest.index("--")
        sys.exit(main(["bench", "des", *rest[split + 1 :], "--policies", ",".join(rest[:split])]))
    sys.exit(main(["bench", "fairness", *rest]))
