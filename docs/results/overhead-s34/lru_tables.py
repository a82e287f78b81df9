"""What a session table's resize costs under churn (thirty-fourth session, docs/results/overhead.md).

    python3 docs/results/overhead-s34/lru_tables.py [--keys N] [--steps M]

Fills each kind of table with `--keys` string keys, then takes `--steps` steps of one insertion and one
eviction of the oldest key (a flood of one-shot sessions past `max_sessions`), and prints each step's worst
and mean time: an `OrderedDict` (`popitem(last=False)`), a plain dict evicting its first key by iteration
(the holes its evictions leave are walked each time), and a plain dict with a `deque` of its keys in
insertion order, stale ones skipped lazily.
"""

from __future__ import annotations

import argparse
import time
from collections import OrderedDict, deque
from collections.abc import Callable


def _steps(fill: Callable[[str], None], step: Callable[[str], None], keys: int, steps: int) -> str:
    for i in range(keys):
        fill(f"s-{i:08d}")
    worst = total = 0.0
    for i in range(keys, keys + steps):
        started = time.perf_counter()
        step(f"s-{i:08d}")
        spent = time.perf_counter() - started
        total += spent
        worst = max(worst, spent)
    return f"worst step {worst * 1e3:.1f} ms, mean {total / steps * 1e6:.2f} µs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=200_000)
    args = parser.parse_args()

    ordered: OrderedDict[str, None] = OrderedDict()

    def ordered_step(key: str) -> None:
        ordered[key] = None
        ordered.popitem(last=False)

    plain: dict[str, None] = {}

    def plain_step(key: str) -> None:
        plain[key] = None
        del plain[next(iter(plain))]

    queued: dict[str, None] = {}
    order: deque[str] = deque()

    def queued_fill(key: str) -> None:
        queued[key] = None
        order.append(key)

    def queued_step(key: str) -> None:
        queued_fill(key)
        while (oldest := order.popleft()) not in queued:
            pass
        del queued[oldest]

    print("OrderedDict:", _steps(lambda k: ordered.__setitem__(k, None), ordered_step, args.keys, args.steps))
    plain_fill = plain.__setitem__
    print(
        "dict, first key by iteration:",
        _steps(lambda k: plain_fill(k, None), plain_step, args.keys, args.steps),
    )
    print("dict + deque of keys:", _steps(queued_fill, queued_step, args.keys, args.steps))


if __name__ == "__main__":
    main()
