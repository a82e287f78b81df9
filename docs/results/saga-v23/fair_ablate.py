"""`saga bench fairness` with `saga` changed in one respect, registered as a preset (an experiment):

python3 docs/results/saga-v23/fair_ablate.py --policy saga-no-headroom SAGA_BENCH_FAIRNESS_ARGS...
"""

from __future__ import annotations

import sys

import msgspec

from proxy.cli import main
from proxy.scheduler import registry

SAGA = registry.PRESETS["saga"]
VARIANTS = {
    "saga-no-retention": msgspec.structs.replace(SAGA, retention=None),
    "saga-no-priority": msgspec.structs.replace(SAGA, prioritize="off"),
    "saga-no-stealing": msgspec.structs.replace(SAGA, stealing=None),
    "saga-no-admission": msgspec.structs.replace(SAGA, admission=None),
    # session-affinity's two scorers (affinity 1.0, least-request 0.5) with every other mechanism of `saga`
    "saga-sa-scorers": msgspec.structs.replace(SAGA, scorers=registry.PRESETS["session-affinity"].scorers),
    "saga-no-headroom": msgspec.structs.replace(
        SAGA, scorers=[s for s in SAGA.scorers if s.type != "kv-headroom-scorer"]
    ),
    "saga-no-prefix": msgspec.structs.replace(
        SAGA, scorers=[s for s in SAGA.scorers if s.type != "prefix-cache-scorer"]
    ),
}

if __name__ == "__main__":
    registry.PRESETS.update(VARIANTS)
    sys.exit(main(["bench", "fairness", *sys.argv[1:]]))
