"""The log-bucket sketch: quantiles within one bucket ratio, merge, decay, conditional quantiles."""

from __future__ import annotations

import math
import random

import pytest

from predictor.return_model import ReturnModel
from predictor.sketch import LogSketch, seconds_sketch

RATIO = (7200.0 / 1e-3) ** (1 / 80)  # one bucket of seconds_sketch


def _lognormal_quantile(median: float, sigma: float, q: float) -> float:
    z = {0.1: -1.2815515655446004, 0.5: 0.0, 0.9: 1.2815515655446004}[q]
    return median * math.exp(sigma * z)


@pytest.mark.parametrize("median", [0.01, 0.4, 35.0, 600.0])
def test_quantiles_of_a_lognormal_are_within_a_bucket(median: float) -> None:
    rng = random.Random(1)
    sketch = seconds_sketch()
    for _ in range(20_000):
        sketch.add(median * rng.lognormvariate(0, 1.0))
    for q in (0.1, 0.5, 0.9):
        true = _lognormal_quantile(median, 1.0, q)
        assert true / RATIO < sketch.quantile(q) < true * RATIO


def test_empty_sketch_answers_nan_and_bad_layout_is_refused() -> None:
    assert math.isnan(seconds_sketch().quantile(0.5))
    with pytest.raises(ValueError):
        LogSketch(1.0, 0.5, 10)


def test_merge_adds_counts_and_decay_scales_them() -> None:
    a, b = seconds_sketch(), seconds_sketch()
    for _ in range(100):
        a.add(0.01)
        b.add(10.0)
    b.merge_into(a)
    assert a.total == 200
    assert a.quantile(0.25) < 0.02 < 5.0 < a.quantile(0.75)
    a.scale(0.5)
    assert a.total == pytest.approx(100)
    assert a.cdf(1.0) == pytest.approx(0.5, abs=0.01)


def test_return_model_survival_and_conditional_quantiles() -> None:
    sketch = seconds_sketch()
    rng = random.Random(2)
    for _ in range(5000):
        sketch.add(rng.lognormvariate(0, 1.0))
    model = ReturnModel(sketch, p_end=0.2)
    assert model.p_return(0) == pytest.approx(0.8)
    # The longer the silence, the less likely a return; and the conditional gap is never before now.
    assert model.p_return(1.0) < 0.8
    assert model.p_return(30.0) < 0.05
    assert model.conditional_quantile(0.5, 5.0) > 5.0
    assert model.quantile(0.5) == pytest.approx(sketch.quantile(0.5), rel=1e-6)
