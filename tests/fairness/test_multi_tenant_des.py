"""Agent Fair Share against FIFO in the discrete-event cluster (virtual time: deterministic)."""

from __future__ import annotations

from fairness import SloClass, TenantsConfig, TenantSpec
from loadtests.bench.fairness import gpu_cost_for
from loadtests.bench.isolated import isolated_task_time_s
from loadtests.des.cluster import run_cluster
from loadtests.des.result import ClusterResult
from loadtests.tasks import AgentTask, Step
from proxy.identity import CallFields, identify
from proxy.scheduler.registry import PluginSpec
from proxy.scheduler.release import ReleaseQueueSpec
from simulator.cost_model import get_profile

PROFILE = get_profile("llama3-8b-h100")
TENANTS = TenantsConfig(
    slo_classes={"interactive": SloClass(tct_factor=1.5), "batch": SloClass()},
    tenants={"app": TenantSpec(1.0, "interactive"), "bulk": TenantSpec(1.0, "batch")},
    default=TenantSpec(1.0, "batch"),
)


def tasks() -> list[AgentTask]:
    bulk = [
        AgentTask(f"bulk-{i}", 512, 4000, [Step(300, "bash", 0.5, 500)] * 4, tenant_id="bulk", arrival_s=0.0)
        for i in range(48)
    ]
    app = [
        AgentTask(
            f"app-{i}", 512, 1000, [Step(40, "click", 1.0, 200)] * 3, tenant_id="app", arrival_s=5.0 + i
        )
        for i in range(6)
    ]
    return bulk + app


def run(order: str) -> ClusterResult:
    queue = ReleaseQueueSpec(
        order=order,
        gate=PluginSpec("max-in-flight-gate", params={"max_in_flight": 4}),
        gpu_cost=gpu_cost_for(PROFILE, 4),
        slo_headroom=2,
    )
    return run_cluster(
        tasks(), replicas=2, profile=PROFILE, policy="session-affinity", queue=queue, tenants=TENANTS
    )


def slo_attainment(result: ClusterResult, tenant: str) -> float:
    by_id = {t.session_id: t for t in tasks()}
    records = [r for r in result.tasks if r.tenant_id == tenant]
    met = sum(
        not r.failed and r.completion_time_s <= 1.5 * isolated_task_time_s(by_id[r.session_id], PROFILE)
        for r in records
    )
    return met / len(records)


def test_afs_keeps_the_interactive_tenant_within_its_slo_where_fifo_does_not() -> None:
    fifo, afs = run("fifo"), run("afs")
    assert afs == run("afs")  # deterministic in virtual time
    assert slo_attainment(afs, "app") > slo_attainment(fifo, "app")
    app_mean = {
        name: sum(r.completion_time_s for r in res.tasks if r.tenant_id == "app") / 6
        for name, res in (("fifo", fifo), ("afs", afs))
    }
    assert app_mean["afs"] < app_mean["fifo"]
    # The batch tenant is not starved: every task finishes, none fails.
    for res in (fifo, afs):
        assert all(not r.failed for r in res.tasks) and len(res.tasks) == 54


def test_tenant_identity_sources_are_configurable() -> None:
    headers = {
        "x-tenant-id": "t1",
        "x-gateway-inference-fairness-id": "t2",
        "authorization": "Bearer sk-secret",
    }
    fields = CallFields()
    assert identify(headers, fields, "r").tenant_id == "t1"
    assert identify(headers, fields, "r", ("x-gateway-inference-fairness-id",)).tenant_id == "t2"
    by_key = identify(headers, fields, "r", ("api-key",)).tenant_id
    assert by_key.startswith("key-") and "secret" not in by_key  # hashed: keys never reach metrics
    assert identify({}, fields, "r", ("x-tenant-id",)).tenant_id == "default"
