"""The proxy's seven session tables under a flood of one-call sessions: the longest step, whole tables against
tables split over shards (thirty-fifth session, docs/results/overhead.md).

    python3 docs/results/overhead-s35/table_stalls.py [--keys N] [--steps M] [--tree DIR]

Each step is what a new one-call session does to the tables once they are full: one insertion in each of the
seven (four LRU tables, three plain dicts, as in proxy/scheduler/core.py, predictor/predictor.py,
proxy/scheduler/admission.py and session affinity) and the oldest session's removal from each. `--keys`
sessions first (the tables' growth is timed too), then `--steps` steps of churn. Prints the longest step
and the mean, for the tables as they were (`OrderedDict` and `dict`) and as they are now
(`predictor.sharded.ShardedLru` and `ShardedDict`, compiled when the tree is built). The seven tables hold
the same keys, so whole tables rebuild within the same step: that step is the event loop's stall.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path


def timed_steps(insert: Callable[[str], None], evict: Callable[[], None], keys: int, steps: int) -> str:
    """`keys` insertions, then `steps` of an insertion and an eviction: the longest step of each phase."""
    grow_worst = churn_worst = total = 0.0
    for i in range(keys):
        started = time.perf_counter()
        insert(f"conv-f98b6eb582687690bcd1d57b-saga-3487-{i}")
        grow_worst = max(grow_worst, time.perf_counter() - started)
    for i in range(keys, keys + steps):
        started = time.perf_counter()
        insert(f"conv-f98b6eb582687690bcd1d57b-saga-3487-{i}")
        evict()
        spent = time.perf_counter() - started
        total += spent
        churn_worst = max(churn_worst, spent)
    return (
        f"filling: longest step {grow_worst * 1e3:.2f} ms; churn: longest step {churn_worst * 1e3:.2f} ms, "
        f"mean {total / steps * 1e6:.2f} µs"
    )


def parsed_args(doc: str | None) -> argparse.Namespace:
    """`--keys`, `--steps` and `--tree` (put first on the import path)."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=300_000)
    parser.add_argument("--tree", default=str(Path(__file__).resolve().parents[3]))
    args = parser.parse_args()
    sys.path.insert(0, args.tree)
    return args


def main() -> None:
    args = parsed_args(__doc__)
    from predictor.sharded import ShardedDict, ShardedLru

    lru_whole: list[OrderedDict[str, object]] = [OrderedDict() for _ in range(4)]
    plain_whole: list[dict[str, object]] = [{} for _ in range(3)]

    def whole_insert(key: str) -> None:
        for lru in lru_whole:
            lru[key] = None
        for plain in plain_whole:
            plain[key] = None

    def whole_evict() -> None:
        oldest, _ = lru_whole[0].popitem(last=False)
        for lru in lru_whole[1:]:
            del lru[oldest]
        for plain in plain_whole:
            del plain[oldest]

    lru_split: list[ShardedLru[object]] = [ShardedLru(salt, start_up=True) for salt in range(4)]
    plain_split: list[ShardedDict[object]] = [ShardedDict(salt, start_up=True) for salt in range(4, 7)]

    def split_insert(key: str) -> None:
        for lru in lru_split:
            lru[key] = None
        for plain in plain_split:
            plain[key] = None

    def split_evict() -> None:
        oldest, _ = lru_split[0].pop_oldest()
        for lru in lru_split[1:]:
            lru.pop(oldest)
        for plain in plain_split:
            plain.pop(oldest)

    keys, steps = args.keys, args.steps
    print("whole (OrderedDict x4, dict x3):", timed_steps(whole_insert, whole_evict, keys, steps))
    print("split (ShardedLru x4, ShardedDict x3):", timed_steps(split_insert, split_evict, keys, steps))


if __name__ == "__main__":
    main()
