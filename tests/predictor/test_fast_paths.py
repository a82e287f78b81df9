"""The predictor's per-call shortcuts give bit-identical answers to the plain computations they replace."""

from __future__ import annotations

import random

from predictor.graph import STEP_BUCKETS, step_bucket
from predictor.return_model import ReturnModel
from predictor.sketch import LogSketch, _edges, seconds_sketch, tokens_sketch


def test_batch_add_equals_one_add_per_sketch() -> None:
    rng = random.Random(3)
    plain = [seconds_sketch() for _ in range(4)]
    batch = [seconds_sketch() for _ in range(4)]
    for _ in range(2000):
        value = rng.lognormvariate(0.0, 3.0)
        i = plain[0].index_of(value)
        for s in plain:
            s.add_at(i)
        LogSketch.add_one_at(batch, i)
        if rng.random() < 0.01:
            for s in (*plain, *batch):
                s.scale(0.5)
        assert batch[0].mean() == plain[0].mean()  # memoised answers are dropped by the batch add too
    for a, b in zip(plain, batch, strict=True):
        assert list(a._counts) == list(b._counts)
        assert (a.total, a._weighted) == (b.total, b._weighted)


def test_cached_edges_are_the_sketch_edges() -> None:
    for sketch in (seconds_sketch(), tokens_sketch(), LogSketch(0.5, 3000.0, 37)):
        edges = _edges(sketch.low, sketch.high, sketch.buckets)
        assert list(edges) == [sketch._edge(i) for i in range(sketch.buckets + 1)]


def test_step_bucket_table_matches_the_bucket_bounds() -> None:
    for calls in [*range(-2, 300), 1000, 1 << 31]:
        expected = next((i for i, (_, hi) in enumerate(STEP_BUCKETS) if calls <= hi), len(STEP_BUCKETS) - 1)
        assert step_bucket(calls) == expected


def test_conditional_quantiles_equal_one_question_each() -> None:
    rng = random.Random(5)
    levels = (0.1, 0.5, 0.9, 0.99)
    for _ in range(50):
        sketch = seconds_sketch()
        for _ in range(rng.randrange(1, 200)):
            sketch.add(rng.lognormvariate(0.0, 2.0))
        model = ReturnModel(sketch, rng.random())
        for waited in (0.0, 0.0, rng.random(), rng.lognormvariate(0.0, 2.0)):
            fresh = ReturnModel(sketch, model.p_end)
            assert model.conditional_quantiles(levels, waited) == tuple(
                fresh.conditional_quantile(q, waited) for q in levels
            )


def test_retention_answers_kept_per_model_equal_fresh_answers() -> None:
    from predictor import Predictor
    from proxy.scheduler.plugin_params import PredictedTtlParams
    from proxy.scheduler.plugins.predicted_ttl import PredictedTtlRetention
    from proxy.scheduler.types import RequestInfo

    rng = random.Random(11)
    predictor = Predictor()
    kept = PredictedTtlRetention(PredictedTtlParams(), rng)
    kept.bind_predictor(predictor)
    tools = ("bash", "edit", "bash", "ask", "")
    now, asked = 0.0, 0
    for n in range(3000):
        sid = f"s{rng.randrange(4)}"
        now += rng.random()
        tool = rng.choice(tools)
        predictor.call_arrived(sid, "agent", now, 1000 + n)
        req = RequestInfo(request_id=f"r{n}", session_id=sid, arrived_at=now)
        fresh = PredictedTtlRetention(PredictedTtlParams(), rng)  # nothing kept: computes every answer
        fresh.bind_predictor(predictor)
        ttl = kept.retain_ttl_s(req, "r0")
        assert ttl == fresh.retain_ttl_s(req, "r0")
        assert kept.retain_priority(req, "r0") == fresh.retain_priority(req, "r0")
        asked += ttl is not None
        now += rng.choice((0.05, 1.0, 10.0)) if tool != "ask" else 120.0
        predictor.call_finished(
            sid, now, 1000 + n, 50, "stop" if tool == "ask" else "tool_calls", (tool,) if tool else ()
        )
    assert asked > 100  # learned: most calls got a TTL to compare


def test_cdf_steps_equal_the_walk_over_non_empty_buckets() -> None:
    rng = random.Random(13)
    for _ in range(100):
        sketch = seconds_sketch()
        for _ in range(rng.randrange(1, 100)):
            sketch.add(rng.lognormvariate(0.0, rng.choice((0.5, 2.0, 4.0))), rng.random())
        xs, cum = [sketch.low], [0.0]
        for lo, hi, count in sketch.nonzero():
            if lo > xs[-1]:
                xs.append(lo)
                cum.append(cum[-1])
            xs.append(hi)
            cum.append(cum[-1] + count / sketch.total)
        cum[-1] = 1.0
        assert sketch.cdf_steps() == (xs, cum)


def test_retention_answers_keep_no_model_the_predictor_has_replaced() -> None:
    """The answers kept per model live as long as the model does: a model the predictor rebuilt (its graph
    learned more) is freed, not held by the retention plugin. Held, the plugin grew by a model a rebuild,
    up to 4,096 of them: the slow growth of the soaks (docs/results/reliability.md, the 26th session)."""
    import gc

    from predictor import Predictor
    from proxy.scheduler.plugin_params import PredictedTtlParams
    from proxy.scheduler.plugins.predicted_ttl import PredictedTtlRetention
    from proxy.scheduler.types import RequestInfo

    rng = random.Random(12)
    predictor = Predictor()
    retention = PredictedTtlRetention(PredictedTtlParams(), rng)
    retention.bind_predictor(predictor)
    tools = ("bash", "edit", "bash", "ask", "")
    now = 0.0
    for n in range(3000):
        sid = f"s{rng.randrange(4)}"
        now += rng.random()
        tool = rng.choice(tools)
        predictor.call_arrived(sid, "agent", now, 1000 + n)
        retention.retain_ttl_s(RequestInfo(request_id=f"r{n}", session_id=sid, arrived_at=now), "r0")
        now += rng.choice((0.05, 1.0, 10.0)) if tool != "ask" else 120.0
        predictor.call_finished(
            sid, now, 1000 + n, 50, "stop" if tool == "ask" else "tool_calls", (tool,) if tool else ()
        )
    gc.collect()
    alive = sum(1 for o in gc.get_objects() if isinstance(o, ReturnModel))
    # the graph learned all along, so each state's model was rebuilt dozens of times (every ~6% more updates;
    # before the fix 211 models were alive here)
    assert predictor.graphs["agent"].updates > 1000
    states = len(predictor.graphs["agent"].nodes)
    assert alive <= 2 * states + 2, f"{alive} return models alive for {states} states"  # at and after a call
