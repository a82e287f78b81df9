"""The cost model's fit to GPU measurements: it recovers known coefficients, keeps failures visible, and the
probe script itself runs (tiny model, on the CPU torch of the real-vLLM venv)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import msgspec
import pytest

from simulator.calibration import fit, recompute_s, report, retention_costs
from simulator.cost_model import PROFILES, prefill_attention_pairs, step_time_s
from tests.real_vllm.real_vllm import require_real_vllm

ROOT = Path(__file__).resolve().parents[2]
TRUTH = msgspec.structs.replace(
    PROFILES["llama3-8b-h100"],
    step_fixed_ms=5.1,
    prefill_token_ms=0.031,
    linear_knee_tokens=192,
    prefill_attention_ms=2.5e-6,
    decode_ms_per_kctx=0.05,
)


def synthetic_steps() -> list[dict[str, object]]:
    """The probe's rows as a GPU that follows TRUTH exactly would give them."""
    rows: list[dict[str, object]] = []

    def add(kind: str, tokens: int, pairs: float, ctx: int, **what: int) -> None:
        ms = 1000 * step_time_s(TRUTH, num_tokens=tokens, attention_pairs=pairs, decode_context_tokens=ctx)
        rows.append(
            {
                "kind": kind,
                "tokens": tokens,
                "attention_pairs": pairs,
                "decode_context_tokens": ctx,
                "ms": ms,
                **what,
            }
        )

    for t in (1, 8, 32, 64, 128, 192, 256, 512, 1024, 4096, 8192):
        add("linear", t, 0.0, 0)
    for t in (1024, 4096, 8192):
        add("prefill", t, t * t / 2.0, 0)
    add("context", 8192, 8192.0 * (8192 + 24576), 0, cached=24576)
    for b, n in ((1, 2048), (32, 8192), (256, 2048)):
        add("decode", b, 0.0, b * n, batch=b, length=n)
    add("mixed", 2048 + 64, 2048 * 2048 / 2.0, 64 * 4096, chunk=2048, batch=64, length=4096)
    return rows


def test_fit_recovers_the_coefficients_that_made_the_measurements() -> None:
    got = fit(synthetic_steps())
    assert got.linear_knee_tokens == TRUTH.linear_knee_tokens
    for name in ("step_fixed_ms", "prefill_token_ms", "prefill_attention_ms", "decode_ms_per_kctx"):
        assert getattr(got, name) == pytest.approx(getattr(TRUTH, name), rel=1e-6), name
    assert got.attention_tokens == pytest.approx(0.031 / 2.5e-6)


def test_a_failed_step_is_left_out_of_the_fit_and_named_in_the_report() -> None:
    steps = synthetic_steps()
    steps.append(
        {
            "kind": "decode",
            "tokens": 256,
            "attention_pairs": 0.0,
            "decode_context_tokens": 256 * 32768,
            "ms": None,
            "error": "OutOfMemoryError: CUDA out of memory",
            "batch": 256,
            "length": 32768,
        }
    )
    assert fit(steps) == fit(steps[:-1])
    probe = {
        "machine": {"device": "cuda", "gpu": "test", "torch": "x", "date": "d"},
        "model": {"name": "llama3-8b", "dtype": "bfloat16"},
        "steps": steps,
    }
    text = report(probe, "llama3-8b-h100")
    assert "decode 256 x 32768 | failed: OutOfMemoryError" in text
    assert "mixed 2048 + decode 64 x 4096 (held out)" in text


def test_too_few_linear_steps_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="three measured linear steps"):
        fit([r for r in synthetic_steps() if r["kind"] != "linear"][:2])


def test_recompute_is_chunked_and_reload_scales_with_the_link() -> None:
    profile = PROFILES["llama3-8b-h100"]
    whole = step_time_s(profile, num_tokens=8192, attention_pairs=prefill_attention_pairs(8192, 0))
    second = step_time_s(profile, num_tokens=8192, attention_pairs=prefill_attention_pairs(8192, 8192))
    assert recompute_s(profile, 8192) == pytest.approx(whole)
    assert recompute_s(profile, 16384) == pytest.approx(whole + second)
    slow, fast = (retention_costs(profile, 128 * 1024, gb_s, [4096])[0] for gb_s in (10.0, 40.0))
    assert slow["reload_s"] == pytest.approx(4 * fast["reload_s"])
    assert slow["recompute_s"] == fast["recompute_s"]


def test_the_probe_runs_a_tiny_model_and_its_output_fits(tmp_path: Path) -> None:
    python, _ = require_real_vllm()  # the venv whose CPU torch the probe needs
    out = tmp_path / "probe.json"
    done = subprocess.run(
        [
            str(python),
            str(ROOT / "simulator" / "gpu_probe.py"),
            "--tiny",
            "--repeats",
            "2",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    probe = json.loads(out.read_text())
    kinds = {row["kind"] for row in probe["steps"]}
    assert kinds == {"linear", "prefill", "context", "decode", "mixed"}
    assert all(row["ms"] > 0 for row in probe["steps"])
    assert probe["host_link"] == {"skipped": "no GPU"}
    assert "| `step_fixed_ms` |" in report(probe, "llama3-8b-h100")


def test_the_measured_h200_profile_is_the_fit_of_its_committed_probe() -> None:
    probe = json.loads((ROOT / "docs" / "results" / "gpu-h200" / "gpu-probe-cudnn.json").read_text())
    got, profile = fit(probe["steps"]), PROFILES["llama3-8b-h200"]
    assert got.linear_knee_tokens == profile.linear_knee_tokens
    for name in ("step_fixed_ms", "prefill_token_ms", "prefill_attention_ms", "decode_ms_per_kctx"):
        assert getattr(got, name) == pytest.approx(getattr(profile, name), rel=0.01), name


def test_the_probe_models_have_the_published_parameter_counts() -> None:
    """The probe's decoders are the real shapes: Llama-3-8B's 8.03B parameters and Llama-3-70B's 70.55B, less
    the input embedding (a lookup, not a matmul), the 70B split four ways as one TP4 rank."""
    python, _ = require_real_vllm()
    code = (
        "import sys, json, torch; sys.path.insert(0, 'simulator'); import gpu_probe as g; "
        "print(json.dumps({s['name']: g.Model(s, torch.device('meta'), torch.bfloat16).params() "
        "for s in (g.LLAMA3_8B, g.LLAMA3_70B_TP4_RANK)}))"
    )
    done = subprocess.run(
        [str(python), "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, check=True
    )
    params = json.loads(done.stdout)
    assert params["llama3-8b"] == pytest.approx(8.03e9 - 128256 * 4096, rel=0.005)
    assert 4 * params["llama3-70b-tp4-rank"] == pytest.approx(70.55e9 - 128256 * 8192, rel=0.005)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0.0, -1.0, "5", True])
def test_a_measurement_that_is_not_a_positive_number_is_refused_naming_its_step(bad: object) -> None:
    steps = synthetic_steps()
    steps[3] = {**steps[3], "ms": bad}
    with pytest.raises(ValueError, match=f"step linear {steps[3]['tokens']}: ms must be a positive number"):
        fit(steps)
