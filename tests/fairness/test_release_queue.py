"""The release queue inside the scheduler core: held calls, fair release from later events, 429 when full."""

from __future__ import annotations

import itertools

import pytest

from fairness import SessionHistory, TenantsConfig, TenantSpec
from proxy.config import ProxyConfig
from proxy.scheduler import (
    ConfigError,
    Dispatch,
    Reject,
    ReplicaStats,
    RequestInfo,
    SchedulerCore,
    build_policy,
)
from proxy.scheduler.registry import PluginSpec
from proxy.scheduler.release import ReleaseQueue, ReleaseQueueSpec
from proxy.scheduler.types import Usage
from tests.clocks import Clock

_ids = itertools.count()
TENANTS = TenantsConfig(tenants={"heavy": TenantSpec(1.0, "batch"), "light": TenantSpec(1.0, "interactive")})


def make_core(
    order: str = "afs", max_in_flight: int = 1, max_queued: int = 100, replicas: tuple[str, ...] = ("r0",)
) -> tuple[SchedulerCore, Clock]:
    tenants = TENANTS
    spec = ReleaseQueueSpec(
        order=order,
        gate=PluginSpec("max-in-flight-gate", params={"max_in_flight": max_in_flight}),
        max_queued=max_queued,
    )
    clock = Clock()
    release = ReleaseQueue(spec, tenants)
    return SchedulerCore(list(replicas), build_policy("session-affinity"), clock, release=release), clock


def call(tenant: str, session: str | None = None, tokens: int = 1000) -> RequestInfo:
    n = next(_ids)
    return RequestInfo(f"q{n}", session or f"s{n}", 0.0, tenant_id=tenant, prompt_tokens=tokens)


def test_without_a_queue_every_call_is_dispatched_at_once() -> None:
    core = SchedulerCore(["r0"], build_policy("session-affinity"), Clock())
    decisions = [core.request_arrived(call("heavy")) for _ in range(5)]
    assert all(isinstance(d, Dispatch) for (d,) in decisions)


def test_a_held_call_is_dispatched_by_a_later_finish() -> None:
    core, _ = make_core()
    first, second = call("heavy"), call("heavy")
    assert [type(d) for d in core.request_arrived(first)] == [Dispatch]
    assert core.request_arrived(second) == []  # held: the gate allows one call in flight
    assert core.replicas["r0"].queued == 1 and core.snapshot()["queued"] == 1
    (released,) = core.request_finished(first.request_id)
    assert isinstance(released, Dispatch) and released.request_id == second.request_id
    assert core.replicas["r0"].queued == 0 and core.replicas["r0"].in_flight == 1


@pytest.mark.parametrize(("order", "light_position"), [("fifo", 5), ("afs", 1)])
def test_a_light_tenant_waits_behind_a_flood_only_without_fairness(order: str, light_position: int) -> None:
    core, _ = make_core(order)
    running = call("heavy")
    core.request_arrived(running)
    for _ in range(4):
        core.request_arrived(call("heavy"))
    light = call("light")
    assert core.request_arrived(light) == []
    released, current = [], running.request_id
    while True:
        decisions = core.request_finished(current)
        if not decisions:
            break
        (d,) = decisions
        released.append(d.request_id)
        current = d.request_id
    assert released.index(light.request_id) + 1 == light_position


def test_full_queue_answers_429_and_nothing_held_is_lost() -> None:
    core, _ = make_core(max_queued=2)
    core.request_arrived(call("heavy"))
    held = [call("heavy"), call("light")]
    for req in held:
        assert core.request_arrived(req) == []
    (reject,) = core.request_arrived(call("heavy"))
    assert isinstance(reject, Reject) and reject.status == 429 and "queue is full" in reject.reason
    assert len(core.release or []) == 2


def test_cancelled_held_call_is_withdrawn_and_a_cancelled_dispatch_frees_its_slot() -> None:
    core, _ = make_core()
    first, second, third = call("heavy"), call("heavy"), call("heavy")
    core.request_arrived(first)
    core.request_arrived(second)
    core.request_arrived(third)
    assert core.request_cancelled(second.request_id) == []
    (released,) = core.request_cancelled(first.request_id)  # the client of a dispatched call went away
    assert released.request_id == third.request_id
    assert core.replicas["r0"].in_flight == 1 and core.replicas["r0"].queued == 0


def test_calls_held_for_a_replica_that_goes_down_move_to_another() -> None:
    core, _ = make_core(replicas=("r0", "r1"))
    a, b = call("heavy", "sa"), call("heavy", "sb")
    ((da,), (db,)) = core.request_arrived(a), core.request_arrived(b)
    assert isinstance(da, Dispatch) and isinstance(db, Dispatch) and da.replica_id != db.replica_id
    waiting = call("heavy", "sa")  # bound to a's replica, which is full
    assert core.request_arrived(waiting) == []
    core.request_finished(db.request_id)  # the other replica has room now, but the call is held for its home
    (moved,) = core.replica_stats(ReplicaStats(da.replica_id, healthy=False))
    assert isinstance(moved, Dispatch) and moved.request_id == waiting.request_id
    assert moved.replica_id == db.replica_id


def test_held_calls_are_rejected_when_no_replica_is_left() -> None:
    core, _ = make_core()
    core.request_arrived(call("heavy"))
    held = call("heavy")
    core.request_arrived(held)
    core.remove_replica("r0")
    (reject,) = core.tick()
    assert isinstance(reject, Reject) and reject.request_id == held.request_id and reject.status == 503


def test_bad_queue_and_tenant_configuration_fails_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"queue\.order"):
        ReleaseQueue(ReleaseQueueSpec(order="lifo"), TenantsConfig())
    with pytest.raises(ConfigError, match="max-in-flight-gate"):
        ReleaseQueue(
            ReleaseQueueSpec(gate=PluginSpec("max-in-flight-gate", params={"max_in_flight": 0})),
            TenantsConfig(),
        )
    bad = TenantsConfig(tenants={"t": TenantSpec(1.0, "gold")})
    with pytest.raises(ConfigError, match=r"tenants\.tenants\.t\.slo_class"):
        ProxyConfig(replicas=["http://x"], tenants=bad).validate()
    with pytest.raises(ConfigError, match="weight"):
        ProxyConfig(replicas=["http://x"], tenants=TenantsConfig(default=TenantSpec(0.0))).validate()


def test_proxy_config_reads_a_tenants_section_and_rejects_unknown_keys() -> None:
    import msgspec

    raw = {
        "replicas": ["http://a"],
        "tenants": {
            "identity": ["x-gateway-inference-fairness-id", "api-key"],
            "tenants": {"web": {"weight": 3, "slo_class": "interactive"}},
        },
        "queue": {"order": "vtc", "gate": {"type": "engine-waiting-gate", "params": {"max_waiting": 1}}},
    }
    config = msgspec.convert(raw, ProxyConfig)
    config.validate()
    assert config.tenants.weight("web") == 3 and config.tenants.weight("other") == 1
    assert config.tenants.slo("web").tct_factor is not None and config.queue is not None
    raw["tenants"] = {"tenant": {}}
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert(raw, ProxyConfig)


def test_slo_headroom_starts_an_interactive_call_at_once_but_not_a_batch_one() -> None:
    tenants = TENANTS
    spec = ReleaseQueueSpec(
        gate=PluginSpec("max-in-flight-gate", params={"max_in_flight": 1}), slo_headroom=1
    )
    core = SchedulerCore(
        ["r0"], build_policy("session-affinity"), Clock(), release=ReleaseQueue(spec, tenants)
    )
    core.request_arrived(call("heavy"))
    assert core.request_arrived(call("heavy")) == []  # batch: waits for the gate
    light = call("light")
    (d,) = core.request_arrived(light)  # interactive: the fair order reaches it, headroom lets it start
    assert isinstance(d, Dispatch) and d.request_id == light.request_id
    assert core.request_arrived(call("light")) == []  # headroom used up


def test_tenant_metrics_export_queue_ttft_slo_and_share_lead() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from proxy.tenant_metrics import TenantCollector

    core, clock = make_core()
    first = call("light")
    core.request_arrived(first)
    core.request_arrived(call("heavy"))
    clock.now = 3.0  # first token after 3 s: misses the interactive class's 2 s TTFT target
    core.first_token(first.request_id)
    registry = CollectorRegistry()
    registry.register(TenantCollector(core))
    text = generate_latest(registry).decode()
    assert 'saga_tenant_queued_calls{tenant="heavy"} 1.0' in text
    assert 'saga_tenant_ttft_slo_attainment{tenant="light"} 0.0' in text
    assert 'saga_tenant_ttft_seconds_bucket{le="5.0",tenant="light"} 1.0' in text
    assert 'saga_tenant_ttft_seconds_bucket{le="2.5",tenant="light"} 0.0' in text
    assert "saga_tenant_share_bound_seconds" in text


def test_a_session_with_a_held_call_is_not_forgotten_as_idle() -> None:
    tenants = TENANTS
    gate = PluginSpec("max-in-flight-gate", params={"max_in_flight": 1})
    clock = Clock()
    release = ReleaseQueue(ReleaseQueueSpec(gate=gate), tenants)
    core = SchedulerCore(
        ["r0"], build_policy("session-affinity"), clock, session_idle_ttl_s=10, release=release
    )
    running, waiting = call("heavy", "busy"), call("heavy", "patient")
    core.request_arrived(running)
    core.request_arrived(waiting)
    clock.now = 100.0
    core.tick()
    assert "patient" in core.sessions and "busy" in core.sessions
    (released,) = core.request_finished(running.request_id)  # releases the held call
    assert released.request_id == waiting.request_id
    clock.now = 200.0
    core.request_finished(waiting.request_id)
    clock.now = 300.0
    core.tick()
    assert len(core.sessions) == 0 and len(release.history) == 0
    assert core.tenant_stats.records["heavy"].task_completion.count == 2


@pytest.mark.parametrize("order", ["vtc", "afs"])
def test_afs_shares_gpu_time_where_vtc_shares_tokens(order: str) -> None:
    """Two backlogged tenants: one re-sends a 50k-token cached context per call, the other sends short
    uncached prompts. Token counting starves the long-context agent of GPU time; AFS splits it evenly."""
    spec = ReleaseQueueSpec(order=order, gate=PluginSpec("max-in-flight-gate"))
    queue = ReleaseQueue(spec, TenantsConfig())
    for i in range(200):
        queue.history.finished(f"long-{i}", 50_000, 100)  # the previous call left 50k tokens cached
        queue.hold(
            RequestInfo(f"L{i}", f"long-{i}", 0.0, tenant_id="long", prompt_tokens=50_300), "r0", set(), 0
        )
        queue.hold(
            RequestInfo(f"S{i}", f"short-{i}", 0.0, tenant_id="short", prompt_tokens=3_000), "r0", set(), 0
        )
    gpu = {"long": 0.0, "short": 0.0}
    for _ in range(100):
        held = queue.next_for("r0", 0.0)
        assert held is not None
        est = queue.history.estimate(held.req.session_id, held.req.prompt_tokens, held.req.tenant_id)
        gpu[held.req.tenant_id] += spec.gpu_cost.call_cost_s(est)
    ratio = gpu["long"] / gpu["short"]
    if order == "afs":
        assert 0.8 < ratio < 1.25
    else:
        assert ratio < 0.5


def test_with_min_active_tenants_a_lone_tenant_bypasses_the_queue_until_another_one_shows_up() -> None:
    spec = ReleaseQueueSpec(
        order="afs",
        gate=PluginSpec("max-in-flight-gate", params={"max_in_flight": 1}),
        min_active_tenants=2,
        active_window_s=60.0,
    )
    clock = Clock()
    core = SchedulerCore(["r0"], build_policy("session-affinity"), clock, release=ReleaseQueue(spec, TENANTS))
    alone = [call("heavy") for _ in range(3)]
    for req in alone:  # one tenant: straight through, past a gate of one call in flight
        assert [type(d) for d in core.request_arrived(req)] == [Dispatch]
    clock.now = 10.0
    light = call("light")
    assert core.request_arrived(light) == []  # two tenants now: the gate and the fair order apply
    assert core.request_arrived(call("heavy")) == []
    finishing = [req.request_id for req in alone]
    while finishing:  # the gate lets the held calls out one at a time as calls end
        finishing += [d.request_id for d in core.request_finished(finishing.pop())]
    assert core.release is not None and len(core.release) == 0
    clock.now = 100.0  # `light` quiet past the window, nothing held: the lone tenant bypasses again
    for req in alone[:2]:
        core.request_arrived(call("heavy", session=req.session_id))
    assert core.release is not None and len(core.release) == 0


def test_min_active_tenants_is_validated() -> None:
    with pytest.raises(ConfigError, match="min_active_tenants"):
        ReleaseQueueSpec(min_active_tenants=0).validate()
    with pytest.raises(ConfigError, match="active_window_s"):
        ReleaseQueueSpec(active_window_s=0).validate()


def test_tenant_metrics_stay_bounded_however_many_tenants_clients_name() -> None:
    """Tenant ids come from a header: 300 tenants holding calls give at most the ledger's 256 labels plus
    `_other` in each queue gauge, and the folded figures keep their meaning (held calls summed)."""
    from prometheus_client import CollectorRegistry, generate_latest

    from fairness.stats import MAX_TENANT_RECORDS, OTHER
    from proxy.tenant_metrics import TenantCollector

    core, _ = make_core(max_queued=1000)
    names = [f"client-{i}" for i in range(300)]
    for name in names:
        core.request_arrived(call(name, session=name))
    held = len(core.release) if core.release is not None else 0
    assert held >= 290  # the gate let a few start; the rest are held, one tenant each
    registry = CollectorRegistry()
    registry.register(TenantCollector(core))
    samples = {
        metric.name: {s.labels["tenant"]: s.value for s in metric.samples}
        for metric in registry.collect()
        if metric.name.startswith("saga_tenant_share") or metric.name == "saga_tenant_queued_calls"
    }
    for name in (
        "saga_tenant_queued_calls",
        "saga_tenant_share_lead_seconds",
        "saga_tenant_share_bound_seconds",
    ):
        assert len(samples[name]) <= MAX_TENANT_RECORDS + 1, name
        assert OTHER in samples[name], name
    assert sum(samples["saga_tenant_queued_calls"].values()) == held
    bounds = samples["saga_tenant_share_bound_seconds"]
    for tenant, lead in samples["saga_tenant_share_lead_seconds"].items():
        assert lead <= bounds.get(tenant, 0.0) + 1e-9  # (a tenant never released yet has no bound, lead 0)
    assert 'tenant="client-299"' not in generate_latest(registry).decode()


def test_made_up_tenant_names_give_their_metrics_labels_back_once_idle() -> None:
    """Without client API keys tenants are named by a header: names a client made up once held the ledger's
    labels (and `/metrics`' series) for the life of the process, folding every later tenant into `_other`.
    Now a tenant arriving at a full ledger takes the place of the one idle longest, once it has been idle
    `idle_s`, and a tenant active since keeps its own."""
    from prometheus_client import CollectorRegistry, generate_latest

    from fairness.stats import MAX_TENANT_RECORDS, TENANT_RECORD_IDLE_S
    from proxy.tenant_metrics import TenantCollector

    core = SchedulerCore(["r0"], build_policy("session-affinity"), clock := Clock())
    registry = CollectorRegistry()
    registry.register(TenantCollector(core))

    def serve(tenant: str) -> None:
        req = call(tenant)
        core.request_arrived(req)
        core.first_token(req.request_id)
        core.request_finished(req.request_id)

    for i in range(MAX_TENANT_RECORDS):
        clock.now = float(i)
        serve(f"made-up-{i}")
    clock.now = 300.0
    serve("regular")  # the ledger is full: folded
    page = generate_latest(registry).decode()
    assert 'tenant="regular"' not in page and 'tenant="_other"' in page
    clock.now = TENANT_RECORD_IDLE_S + 0.5  # made-up-0 idle that long; the others not yet
    serve("regular")
    serve("another")  # one place came free, and it is taken
    page = generate_latest(registry).decode()
    assert 'saga_tenant_ttft_seconds_count{tenant="regular"} 1.0' in page
    assert 'tenant="made-up-0"' not in page and 'tenant="another"' not in page
    assert 'tenant="made-up-1"' in page
    clock.now = TENANT_RECORD_IDLE_S + 400.0  # made-up-1..255 idle past it too
    serve("another")
    page = generate_latest(registry).decode()
    assert 'tenant="another"' in page and 'tenant="regular"' in page and 'tenant="made-up-1"' not in page
    assert len(core.tenant_stats.records) <= MAX_TENANT_RECORDS + 1


def test_a_tenant_naming_a_new_session_every_call_is_charged_the_output_it_writes() -> None:
    """The thirteenth review: a session's first call was charged the default 200 output tokens whatever it
    wrote, so a tenant writing 1,600 tokens a call under a new session id each time got 8x the decode of a
    tenant writing 200 in one session. A first call is now expected to write what its tenant's calls wrote."""
    spec = ReleaseQueueSpec(order="afs", gate=PluginSpec("max-in-flight-gate"))
    queue = ReleaseQueue(spec, TenantsConfig())
    outputs = {"hog": 1600, "light": 200}
    decoded = {"hog": 0, "light": 0}
    for i in range(400):  # both backlogged throughout: each call released is replaced by another
        for tenant in ("hog", "light"):
            if queue.queued_by_tenant().get(tenant, 0) < 2:
                session = f"hog-{i}" if tenant == "hog" else "light"  # a new id every call
                req = RequestInfo(f"{tenant}-{i}", session, 0.0, tenant_id=tenant, prompt_tokens=100)
                assert queue.hold(req, "r0", set(), 0.0)
        held = queue.next_for("r0", 0.0)
        assert held is not None
        tenant = held.req.tenant_id
        decoded[tenant] += outputs[tenant]
        queue.finished(held.req, Usage(100, outputs[tenant]))
    assert decoded["hog"] < 1.5 * decoded["light"]  # was 8x: GPU time split about evenly now
    assert queue.history.tenant_output("hog") > 1500 and queue.history.tenant_output("nobody") == 200


def test_an_ended_session_whose_other_call_finishes_later_leaves_no_history() -> None:
    """The thirteenth review: a session ended while another call of it ran was filed in the release queue's
    history again by that call's finish, after its end forgot it, and stayed there for good."""
    core, _ = make_core(max_in_flight=64)
    assert core.release is not None
    for i in range(50):
        a = RequestInfo(f"a{i}", f"s{i}", 0.0, tenant_id="heavy", prompt_tokens=100)
        b = RequestInfo(f"b{i}", f"s{i}", 0.0, tenant_id="heavy", prompt_tokens=100)
        core.request_arrived(a)
        core.request_arrived(b)
        core.request_finished(a.request_id, Usage(100, 1))
        core.session_ended(f"s{i}")  # (X-Session-End on the call that finished)
        core.request_finished(b.request_id, Usage(100, 1))
    assert len(core.sessions) == 0 and len(core.release.history) == 0


def test_short_calls_do_not_lower_a_tenants_first_call_charge_below_the_default() -> None:
    """The fourteenth review: the tenant's expected first-call output was averaged over every call, so ten
    one-token calls between 2,000-token first calls brought their charge to 48 tokens, under b75f990's fixed
    200. It averages sessions' first calls only, and never goes below the default."""
    history = SessionHistory(default_output_tokens=200)
    for i in range(20):
        history.finished(f"s{i}", 100, 2000, "t")  # a new session's 2,000-token first call
        for _ in range(10):
            history.finished(f"s{i}", 100, 1, "t")  # padding within the session: not a first call
    assert history.estimate("next", 100, "t").output_tokens > 1900
    for i in range(50):
        history.finished(f"pad{i}", 100, 1, "t")  # padding with new sessions: first calls of one token
    assert history.estimate("next", 100, "t").output_tokens == 200
