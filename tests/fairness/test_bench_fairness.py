"""`saga bench fairness` end to end on a tiny setting: every contender runs, the JSON holds per-tenant
results, and the observed counter spread obeys the proved bound."""

from __future__ import annotations

import argparse
from pathlib import Path

import msgspec
import pytest

from loadtests.bench.fairness import FairnessReport, add_fairness_parser, run_fairness


def test_bench_fairness_writes_per_tenant_results(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_fairness_parser(parser.add_subparsers(dest="bench_mode"))
    out = tmp_path / "fairness.json"
    args = parser.parse_args(
        ["fairness", "--replicas", "1", "--interactive-tasks", "2", "--interactive-rate", "0.5",
         "--batch-tasks", "6", "--batch-agents", "6", "--max-in-flight", "2", "--json", str(out)]
    )  # fmt: skip
    assert run_fairness(args) == 0
    report = msgspec.json.decode(out.read_bytes(), type=FairnessReport)
    assert [c.name for c in report.contenders] == ["none", "fifo", "vtc", "afs"]
    for c in report.contenders:
        assert [t.tenant for t in c.tenants] == ["interactive", "batch"]
        assert [t.tasks for t in c.tenants] == [2, 6] and all(t.failed == 0 for t in c.tenants)
        assert c.tenants[0].slo_attainment is not None and c.tenants[1].slo_attainment is None
        assert 0 < c.jain_slowdown <= 1 and c.batch_fair_share_ratio is not None
        if c.name in ("vtc", "afs"):
            assert c.invariant_held is True
            assert c.peak_spread_s is not None and c.spread_bound_s is not None
            assert c.peak_spread_s <= c.spread_bound_s + 1e-9


def test_a_fleet_share_lets_the_light_tenant_go_first_where_it_gathered(tmp_path: Path) -> None:
    """The same seeded run with the share counted per replica and over the fleet (virtual time): over the
    fleet the interactive tenant's slowest tasks are faster (its calls no longer wait out the flood's half of
    a replica where its workflows gathered), every task still completes, and the per-lane spread bound is
    reported only where it holds (per replica)."""
    parser = argparse.ArgumentParser()
    add_fairness_parser(parser.add_subparsers(dest="bench_mode"))
    reports = {}
    for share in ("replica", "fleet"):
        out = tmp_path / f"fairness-{share}.json"
        args = parser.parse_args(
            ["fairness", "--replicas", "4", "--interactive-tasks", "20", "--interactive-rate", "0.2",
             "--batch-tasks", "80", "--batch-agents", "24", "--max-in-flight", "4", "--contenders", "afs",
             "--share", share, "--json", str(out)]
        )  # fmt: skip
        assert run_fairness(args) == 0
        reports[share] = report = msgspec.json.decode(out.read_bytes(), type=FairnessReport)
        assert report.setup["share"] == share
        (afs,) = report.contenders
        assert all(t.failed == 0 for t in afs.tenants) and [t.tasks for t in afs.tenants] == [20, 80]
        assert afs.invariant_held is (True if share == "replica" else None)
    replica, fleet = (reports[s].contenders[0].tenants[0] for s in ("replica", "fleet"))
    assert fleet.slowdown_p99 < 0.95 * replica.slowdown_p99  # 1.28x against 1.48x when written


def test_kv_scale_puts_the_tenants_under_kv_pressure(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_fairness_parser(parser.add_subparsers(dest="bench_mode"))
    slowdowns = {}
    for scale in (None, 0.1):
        out = tmp_path / f"fairness-{scale}.json"
        argv = ["fairness", "--replicas", "1", "--interactive-tasks", "2", "--interactive-rate", "0.5",
                "--batch-tasks", "6", "--batch-agents", "6", "--contenders", "none",
                "--json", str(out)]  # fmt: skip
        if scale is not None:
            argv += ["--kv-scale", str(scale)]
        assert run_fairness(parser.parse_args(argv)) == 0
        report = msgspec.json.decode(out.read_bytes(), type=FairnessReport)
        assert report.setup["kv_scale"] == scale
        (none,) = report.contenders
        assert all(t.failed == 0 for t in none.tenants)
        slowdowns[scale] = none.tenants[1].slowdown_mean
    assert slowdowns[0.1] > slowdowns[None]  # the batch agents' contexts no longer all fit


def test_a_kv_scale_too_small_for_one_block_is_refused_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    add_fairness_parser(parser.add_subparsers(dest="bench_mode"))
    out = tmp_path / "fairness.json"
    args = parser.parse_args(["fairness", "--kv-scale", "1e-9", "--json", str(out)])
    assert run_fairness(args) == 2
    assert "KV capacity" in capsys.readouterr().out and not out.exists()


def test_tenants_section_of_a_proxy_config_file(tmp_path: Path) -> None:
    import pytest

    from loadtests.bench.fairness import load_tenants

    good = tmp_path / "proxy.yaml"
    good.write_text(
        "replicas: [http://a]\n"
        "tenants:\n"
        "  slo_classes: {interactive: {tct_factor: 2.0}, batch: {}}\n"
        "  tenants:\n"
        "    interactive: {weight: 4, slo_class: interactive}\n"
        "    batch: {weight: 1, slo_class: batch}\n"
        "  default: {slo_class: batch}\n"
    )
    tenants = load_tenants(good)
    assert tenants.weight("interactive") == 4 and tenants.slo("interactive").tct_factor == 2.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("tenants:\n  tenants: {x: {weight: 1, slo_class: gold}}\n")
    with pytest.raises(ValueError, match="gold"):
        load_tenants(bad)
