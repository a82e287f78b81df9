"""CPU KV offload through a simulated replica's HTTP surface (`saga sim --kv-offload-gib`): a prefix evicted
from the GPU comes back from CPU as cached tokens, and the offload counters show on /metrics."""

from __future__ import annotations

import random

import aiohttp
import pytest

from simulator.cost_model import get_profile
from simulator.server import start_fleet

TINY = get_profile("tiny-cpu")  # blocks of 128 tokens, 2 KiB of KV a token


def token_ids(seed: int, n: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(300, 3000) for _ in range(n)]


async def cached_tokens_of_a_evicted_then_asked_again(kv_offload_gib: float | None) -> tuple[int, str]:
    # 19 usable GPU blocks: each 1500-token prompt takes 12, so B and C push A out
    fleet = await start_fleet(
        1, time_scale=1000.0, profile="tiny-cpu", num_gpu_blocks=20, kv_offload_gib=kv_offload_gib
    )
    try:
        url = fleet.urls[0]
        async with aiohttp.ClientSession() as http:
            cached = 0
            for seed in (1, 2, 3, 1):
                body = {"prompt": token_ids(seed, 1500), "max_tokens": 1, "ignore_eos": True}
                async with http.post(f"{url}/v1/completions", json=body) as r:
                    assert r.status == 200
                    cached = (await r.json())["usage"]["prompt_tokens_details"]["cached_tokens"]
            async with http.get(f"{url}/metrics") as r:
                metrics = await r.text()
        return cached, metrics
    finally:
        await fleet.close()


def metric(text: str, name: str) -> float:
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + "{")]
    assert len(values) == 1, f"{name}: {values}"
    return values[0]


async def test_an_evicted_prefix_is_loaded_back_from_cpu() -> None:
    plain, plain_metrics = await cached_tokens_of_a_evicted_then_asked_again(None)
    cached, metrics = await cached_tokens_of_a_evicted_then_asked_again(0.01)  # 40 CPU blocks
    assert plain == 0  # recomputed in full
    assert cached == (1500 - 1) // 128 * 128  # every full block but the one holding the last token
    loaded_bytes = cached * TINY.kv_bytes_per_token
    assert metric(metrics, "vllm:kv_offload_load_bytes_total") == loaded_bytes
    assert "saga:cpu_kv_usage_perc" in metrics
    assert "vllm:kv_offload" not in plain_metrics  # no offload counters without a CPU tier
    assert 'kv_offloading_size="None"' in plain_metrics and 'kv_offloading_size="None"' not in metrics


@pytest.mark.parametrize("bad", ["0", "-1", "x"])
def test_sim_refuses_a_bad_offload_size(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    from proxy.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["sim", "--kv-offload-gib", bad])
    assert "--kv-offload-gib" in capsys.readouterr().err
    args = build_parser().parse_args(["serve", "--simulate", "2", "--kv-offload-gib", "8"])
    assert args.kv_offload_gib == 8.0
