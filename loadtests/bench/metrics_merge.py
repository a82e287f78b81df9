"""CPU of one merged /metrics answer with workers: the merging worker's event loop spends it per scrape.

`python -m loadtests.bench.metrics_merge [--workers 4 8] [--replicas 8 64] [--repeats 200]` builds one
worker's exposition as the proxy writes it (ProxyMetrics and the tenant collector over a core with R
replicas, every per-replica series present) and prints, for each size, the CPU per merge of N copies
(`time.process_time`, µs): proxy/metrics.py's line merge, and prometheus_client's parser over the same
texts for comparison. The machine is shared: compare side by side.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable, Sequence

from prometheus_client.parser import text_string_to_metric_families

from proxy.metrics import ProxyMetrics, merge_expositions
from proxy.scheduler import SchedulerCore, build_policy
from proxy.tenant_metrics import TenantCollector


def exposition(replicas: int) -> str:
    urls = [f"http://10.0.0.{i}:8000" for i in range(replicas)]
    core = SchedulerCore(urls, build_policy("round-robin"), time.monotonic)
    metrics = ProxyMetrics()
    metrics.registry.register(TenantCollector(core))
    for url in urls:
        metrics.responses.bump(url, "200")
        metrics.responses.bump(url, "503")
        metrics.upstream_failures.bump(url, "upstream_5xx")
    for route in ("/v1/chat/completions", "/v1/completions"):
        metrics.calls.bump(route, "200")
    for seconds in (0.01, 0.2, 3.0):
        metrics.ttft.observe(seconds)
        metrics.latency.observe(seconds)
    return metrics.response(core).text or ""


def parse_only(texts: Sequence[str]) -> None:
    for text in texts:
        for _ in text_string_to_metric_families(text):
            pass


def cpu_us(work: Callable[[], object], repeats: int) -> float:
    start = time.process_time()
    for _ in range(repeats):
        work()
    return (time.process_time() - start) / repeats * 1e6


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--replicas", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args(argv)
    for replicas in args.replicas:
        text = exposition(replicas)
        for workers in args.workers:
            texts = [text] * workers
            merged = cpu_us(functools.partial(merge_expositions, texts, workers), args.repeats)
            parsed = cpu_us(functools.partial(parse_only, texts), max(1, args.repeats // 10))
            print(
                f"{workers} workers x {replicas} replicas ({len(text)} B each): "
                f"merge {merged:.0f} us CPU, prometheus_client's parser alone {parsed:.0f} us"
            )


if __name__ == "__main__":
    main()
