"""The scraped KV capacity, attacked: what a replica's /metrics says that routing must not believe."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from proxy.health import _offloading_on, parse_load

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


def reference_load(text: str) -> dict[str, float]:
    """What `parse_load` read with prometheus_client's parser (every family), before it read only its own."""
    found: dict[str, float] = {}
    gauges = {"vllm:num_requests_waiting": "waiting", "vllm:num_requests_running": "running"}
    gauges["vllm:kv_cache_usage_perc"] = "kv_usage"
    for family in text_string_to_metric_families(text):
        if family.name == "vllm:cache_config_info":
            capacity = 0.0
            for s in family.samples:
                offloading = s.labels.get("kv_offloading_size")
                if offloading is not None:
                    on = 1.0 if _offloading_on(offloading) else 0.0
                    found["cpu_kv_tier"] = max(found.get("cpu_kv_tier", 0.0), on)
                try:
                    blocks, size = (
                        int(s.labels.get("num_gpu_blocks", "")),
                        int(s.labels.get("block_size", "")),
                    )
                except ValueError:
                    continue
                if blocks > 0 and size > 0:
                    capacity += blocks * size
            if capacity:
                found["kv_capacity_tokens"] = capacity
        elif family.name in gauges:
            values = [s.value for s in family.samples]
            field = gauges[family.name]
            found[field] = _added(values) if field != "kv_usage" else max(values, default=0.0)
    return found


def _added(values: list[float]) -> float:
    """Left to right from 0.0, as Python 3.11's sum() adds floats (3.12's compensates: an ulp off)."""
    total = 0.0
    for value in values:
        total += value
    return total


def same_figures(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def test_a_real_vllm_metrics_page_reads_as_prometheus_client_reads_it() -> None:
    """vLLM's CPU build's /metrics after five calls (614 lines: histograms, the cache config's 30 labels)."""
    text = (Path(__file__).parent / "data" / "vllm_cpu_metrics.txt").read_text()
    load = parse_load(text)
    assert load == reference_load(text)
    assert load["kv_capacity_tokens"] == 524_288 and load["cpu_kv_tier"] == 0.0 and load["waiting"] == 0.0


_FAMILIES = (
    "vllm:num_requests_waiting",
    "vllm:num_requests_running",
    "vllm:kv_cache_usage_perc",
    "vllm:cache_config_info",
    "vllm:num_requests_waiting_by_reason",  # names that start like the ones read, and must not be
    "vllm:kv_cache_usage_perc_max",
    "vllm:prompt_tokens",
)
_label_values = st.one_of(
    st.sampled_from(["16", "1000", "-4", "0", "None", "nan", "inf", "64", "0.5", "1e3", ""]),
    st.text(alphabet=st.sampled_from('ab09}{,="\\\n é'), max_size=8),
)
_values = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr).map(lambda v: v.replace("inf", "Inf")),
    st.sampled_from(["NaN", "+Inf", "-Inf", "1e3", "0.0"]),
)
_samples = st.lists(
    st.tuples(
        st.dictionaries(
            st.sampled_from(["engine", "block_size", "num_gpu_blocks", "kv_offloading_size", "model_name"]),
            _label_values,
            max_size=4,
        ),
        _values,
        st.booleans(),  # a timestamp after the value
    ),
    min_size=1,
    max_size=3,
)


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_FAMILIES), _samples), max_size=6, unique_by=lambda f: f[0]))
def test_any_page_reads_as_prometheus_client_reads_it(families: list[tuple[str, list[Any]]]) -> None:
    """Labels with escapes, braces and newlines, values of every float spelling, timestamps, families whose
    names extend the ones read: the same figures as reading every family with prometheus_client."""
    lines = []
    for name, samples in families:
        lines += [f"# HELP {name} A family.", f"# TYPE {name} gauge"]
        for labels, value, stamped in samples:
            rendered = ",".join(f'{k}="{_escaped(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{rendered}}} {value}" + (" 1700000000000" if stamped else ""))
    text = "\n".join(lines) + "\n"
    assert same_figures(parse_load(text), reference_load(text))
    crlf = text.replace("\n", "\r\n")  # line ends as a Windows-built exporter might write them
    assert same_figures(parse_load(crlf), reference_load(crlf))


def test_label_escapes_are_undone_as_the_text_format_says() -> None:
    """An escaped newline around a number still reads as the number (as int() and prometheus_client read
    it); an escaped quote cannot forge a label."""
    head = "# TYPE vllm:cache_config_info gauge\n"
    labels = 'block_size="16\\n",num_gpu_blocks="\\n10",kv_offloading_size="8\\n"'
    text = head + f"vllm:cache_config_info{{{labels}}} 1\n"
    assert parse_load(text) == reference_load(text) == {"kv_capacity_tokens": 160.0, "cpu_kv_tier": 1.0}
    forged = head + 'vllm:cache_config_info{engine="x\\",num_gpu_blocks=\\"9",block_size="16"} 1\n'
    assert parse_load(forged) == reference_load(forged) == {}


def test_a_label_that_never_closes_costs_one_pass() -> None:
    """A value whose quote never closes, or a run of name characters with no `=`, ends the labels read; the
    next line is read as usual. Labels were once searched for at every character, each try running to the
    end of the run: these 64 KB lines took ~40 s (8 KB: 0.6 s), and a page may hold 16 MB."""
    head = "# TYPE vllm:cache_config_info gauge\n"
    unclosed = 'vllm:cache_config_info{block_size="16",engine="' + "a" * 65_536 + "} 1\n"
    nameless = 'vllm:cache_config_info{block_size="16",' + "b" * 65_536 + "} 1\n"
    good = 'vllm:cache_config_info{block_size="16",num_gpu_blocks="10"} 1\n'
    assert parse_load(head + unclosed + nameless + good) == {"kv_capacity_tokens": 160.0}
