"""The scraped KV capacity, attacked: what a replica's /metrics says that routing must not believe."""

from __future__ import annotations

from proxy.health import parse_load

INFO = 'vllm:cache_config_info{{block_size="{size}",num_gpu_blocks="{blocks}",engine="{e}"}} 1.0\n'


def metrics(*infos: tuple[str, str]) -> str:
    head = "# HELP vllm:cache_config_info Cache config\n# TYPE vllm:cache_config_info gauge\n"
    lines = (INFO.format(size=size, blocks=blocks, e=i) for i, (size, blocks) in enumerate(infos))
    return head + "".join(lines)


def test_capacity_is_blocks_times_block_size_summed_over_engines() -> None:
    assert parse_load(metrics(("16", "1000"), ("16", "500")))["kv_capacity_tokens"] == 24_000


def test_non_numeric_negative_zero_and_non_finite_labels_are_no_capacity() -> None:
    for bad in (("16", "-1000"), ("0", "1000"), ("16", "nan"), ("16", "inf"), ("16", "1e3"), ("x", "\x00")):
        assert "kv_capacity_tokens" not in parse_load(metrics(bad)), bad
    # a bad engine does not spoil a good one
    assert parse_load(metrics(("16", "-5"), ("16", "10")))["kv_capacity_tokens"] == 160


def test_a_cpu_kv_tier_is_read_from_kv_offloading_size() -> None:
    def with_offload(size: str) -> str:
        head = "# HELP vllm:cache_config_info Cache config\n# TYPE vllm:cache_config_info gauge\n"
        labels = f'block_size="16",num_gpu_blocks="10",kv_offloading_size="{size}"'
        return head + f"vllm:cache_config_info{{{labels}}} 1.0\n"

    assert parse_load(with_offload("64"))["cpu_kv_tier"] == 1.0
    assert parse_load(with_offload("0.5"))["cpu_kv_tier"] == 1.0
    for off in ("None", "0", "-4", "nan", "inf", "", "\x00"):  # off, or nothing a tier could be
        assert parse_load(with_offload(off))["cpu_kv_tier"] == 0.0, off
    assert "cpu_kv_tier" not in parse_load(metrics(("16", "10")))  # a vLLM without the option: unknown
