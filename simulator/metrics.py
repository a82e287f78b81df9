"""Prometheus metrics of one simulated replica, with vLLM's metric names, labels and buckets.

Contract: each replica owns a `CollectorRegistry`, so several replicas live in one process. Gauges and
counters are read from the engine at scrape time; latency histograms are observed by the driver in
simulated seconds (what vLLM would have measured on the modelled GPU). KV retention (docs/retention-api.md)
adds `saga:retained_blocks`, `saga:retained_sessions` and `saga:retentions_dropped_total`; retained blocks
also count in `vllm:kv_cache_usage_perc`, as they do on real vLLM with the plugin. CPU KV offload
(simulator.offload) adds vLLM's `vllm:kv_offload_store_bytes`/`vllm:kv_offload_load_bytes` counters and
`saga:cpu_kv_usage_perc`.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from simulator.engine import Engine, RequestOutput

_TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
    80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
_REQUEST_LATENCY_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0,
    960.0, 1920.0, 7680.0,
)  # fmt: skip
_LABELS = ("model_name", "engine")


class _EngineCollector(Collector):
    """Scrape-time gauges and counters read from the engine's stats."""

    def __init__(self, engine: Engine, model_name: str, engine_index: str) -> None:
        self._engine = engine
        self._labels = [model_name, engine_index]
        self._engine_index = engine_index

    def collect(self) -> Iterator[Metric]:
        stats = self._engine.stats()
        labels = self._labels
        gauges = (
            (
                "vllm:num_requests_running",
                "Number of requests in model execution batches.",
                stats.num_running,
            ),
            ("vllm:num_requests_waiting", "Number of requests waiting to be processed.", stats.num_waiting),
            ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", stats.kv_usage),
            (
                "saga:retained_blocks",
                "KV blocks held by session retentions (distinct blocks).",
                stats.num_retained_blocks,
            ),
            ("saga:retained_sessions", "Sessions holding a KV retention.", stats.num_retained_sessions),
        )
        for name, doc, value in gauges:
            gauge = GaugeMetricFamily(name, doc, labels=_LABELS)
            gauge.add_metric(labels, value)
            yield gauge
        counters: list[tuple[str, str, int]] = [
            (
                "vllm:prefix_cache_queries",
                "Prefix cache queries, in tokens.",
                stats.prefix_cache_queries_total,
            ),
            ("vllm:prefix_cache_hits", "Prefix cache hits, in tokens.", stats.prefix_cache_hits_total),
            ("vllm:num_preemptions", "Cumulative number of preemptions.", stats.num_preemptions_total),
            ("vllm:prompt_tokens", "Number of prefill tokens processed.", stats.prompt_tokens_total),
            (
                "vllm:prompt_tokens_cached",
                "Number of cached prompt tokens (prefix cache hits).",
                stats.prompt_tokens_cached_total,
            ),
            (
                "vllm:generation_tokens",
                "Number of generation tokens processed.",
                stats.generation_tokens_total,
            ),
            (
                "saga:retentions_dropped",
                "KV retentions released before their TTL, by the retention cap or memory pressure.",
                stats.retentions_dropped_total,
            ),
        ]
        if self._engine.offload is not None:  # vLLM's OffloadingConnector transfer counters, and pool usage
            per_token = self._engine.profile.kv_bytes_per_token
            counters += [
                (
                    "vllm:kv_offload_store_bytes",
                    "KV bytes stored GPU to CPU (native offloading).",
                    stats.offload_stored_tokens_total * per_token,
                ),
                (
                    "vllm:kv_offload_load_bytes",
                    "KV bytes loaded CPU to GPU (native offloading).",
                    stats.offload_loaded_tokens_total * per_token,
                ),
            ]
            gauge = GaugeMetricFamily("saga:cpu_kv_usage_perc", "CPU KV offload pool usage.", labels=_LABELS)
            gauge.add_metric(labels, stats.cpu_kv_usage)
            yield gauge
        for name, doc, total in counters:
            counter = CounterMetricFamily(name, doc, labels=_LABELS)
            counter.add_metric(labels, total)
            yield counter
        info_labels = {
            "block_size": str(stats.block_size),
            "cache_dtype": "auto",
            "enable_prefix_caching": "True",
            "engine": self._engine_index,
            "gpu_memory_utilization": "0.9",
            # vLLM's --kv-offloading-size (GiB, "None" when off): the CPU tier's size, as its pool holds it
            "kv_offloading_size": "None"
            if self._engine.offload is None
            else f"{self._engine.offload.num_blocks * self._engine.profile.kv_bytes_per_block / 2**30:g}",
            "num_gpu_blocks": str(stats.num_gpu_blocks),
            "prefix_caching_hash_algo": self._engine.hash_algo,
        }
        info = GaugeMetricFamily(
            "vllm:cache_config_info", "Information of the LLMEngine's CacheConfig", labels=list(info_labels)
        )
        info.add_metric(list(info_labels.values()), 1.0)
        yield info


class ReplicaMetrics:
    """The registry of one replica; `observe` takes each delivered output with its simulated time."""

    def __init__(self, engine: Engine, *, model_name: str, engine_index: str = "0") -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_EngineCollector(engine, model_name, engine_index))
        labels = (model_name, engine_index)
        self._ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            _LABELS,
            buckets=_TTFT_BUCKETS,
            registry=self.registry,
        ).labels(*labels)
        self._e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            _LABELS,
            buckets=_REQUEST_LATENCY_BUCKETS,
            registry=self.registry,
        ).labels(*labels)
        self._queue = Histogram(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            _LABELS,
            buckets=_REQUEST_LATENCY_BUCKETS,
            registry=self.registry,
        ).labels(*labels)
        self._success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            [*_LABELS, "finished_reason"],
            registry=self.registry,
        )
        self._labels = labels

    def observe(self, out: RequestOutput, now: float) -> None:
        if out.first_token:
            self._ttft.observe(now - out.arrival_time)
            self._queue.observe(max(0.0, out.first_scheduled_time - out.arrival_time))
        if out.finish_reason is not None:
            self._e2e.observe(now - out.arrival_time)
            self._success.labels(*self._labels, out.finish_reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
