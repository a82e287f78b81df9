"""The KV a session's last call asked a replica to keep is given up (`take_releases`) once the session ended
(found by the fifth review: it was held to its TTL, ranked with its workflow, and newer work waited behind
it); a call that goes elsewhere keeps it (its workflow may come back)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from proxy.scheduler import Dispatch, PolicySpec, ReplicaStats, SchedulerCore, Usage, build_policy
from proxy.scheduler.framework import Retention
from proxy.scheduler.plugin_spec import PLUGIN_TYPES
from proxy.scheduler.registry import PluginSpec
from proxy.scheduler.release import ReleaseQueueSpec
from proxy.scheduler.types import ReplicaId, RequestInfo

USAGE = Usage(prompt_tokens=1_000, completion_tokens=10, finish_reason="tool_calls")


class _Keep(Retention):
    type_name = "test-keep-retention"

    def retain_ttl_s(self, req: RequestInfo, replica_id: ReplicaId) -> float | None:
        return 60.0


@pytest.fixture
def core() -> Iterator[SchedulerCore]:
    PLUGIN_TYPES[_Keep.type_name] = _Keep
    spec = PolicySpec(
        picker=PluginSpec("max-score-picker"),
        scorers=[PluginSpec("session-affinity-scorer")],
        retention=PluginSpec(_Keep.type_name),
    )
    yield SchedulerCore(["r0", "r1"], build_policy(spec, seed=0), lambda: 0.0)
    del PLUGIN_TYPES[_Keep.type_name]


def _served(core: SchedulerCore, request_id: str, session: str) -> str:
    (d,) = core.request_arrived(RequestInfo(request_id, session, 0.0, prompt_tokens=1_000))
    assert isinstance(d, Dispatch) and d.retain_ttl_s == 60.0
    core.request_finished(request_id, USAGE)
    return d.replica_id


def test_a_session_ended_gives_up_the_kv_its_last_call_kept(core: SchedulerCore) -> None:
    replica = _served(core, "q1", "s")
    assert core.take_releases() == []  # kept: the session goes on
    core.session_ended("s")
    assert core.take_releases() == [("s", replica)]
    core.session_ended("s")
    assert core.take_releases() == []  # once


def test_a_call_running_when_its_session_ended_gives_up_its_kv_when_it_ends(core: SchedulerCore) -> None:
    (d,) = core.request_arrived(RequestInfo("q1", "s", 0.0, prompt_tokens=1_000))
    assert isinstance(d, Dispatch)
    core.session_ended("s")
    assert core.take_releases() == []  # nothing kept yet
    core.request_finished("q1", USAGE)
    assert core.take_releases() == [("s", d.replica_id)]


def test_a_call_that_goes_elsewhere_keeps_the_kv_kept_where_it_was(core: SchedulerCore) -> None:
    first = _served(core, "q1", "s")
    core.replica_stats(ReplicaStats(first, healthy=False))
    (d,) = core.request_arrived(RequestInfo("q2", "s", 0.0, prompt_tokens=1_000))
    assert isinstance(d, Dispatch) and d.replica_id != first
    assert core.take_releases() == []


def test_a_session_ended_while_its_call_waits_keeps_its_kv_for_that_call() -> None:
    """Its call still goes after the end, and uses what its last call kept: the KV goes once it is done."""
    PLUGIN_TYPES[_Keep.type_name] = _Keep
    try:
        gate = PluginSpec("max-in-flight-gate", params={"max_in_flight": 1})
        spec = PolicySpec(
            picker=PluginSpec("max-score-picker"),
            scorers=[PluginSpec("session-affinity-scorer")],
            retention=PluginSpec(_Keep.type_name),
            queue=ReleaseQueueSpec(gate=gate),
        )
        core = SchedulerCore(["r0"], build_policy(spec, seed=0), lambda: 0.0)
    finally:
        del PLUGIN_TYPES[_Keep.type_name]
    replica = _served(core, "q1", "s")
    (busy,) = core.request_arrived(RequestInfo("b", "other", 0.0, prompt_tokens=1_000))
    assert core.request_arrived(RequestInfo("q2", "s", 0.0, prompt_tokens=1_000)) == []  # behind the gate
    core.session_ended("s")
    assert core.take_releases() == []  # q2 still goes, onto what q1 kept
    (q2,) = core.request_finished(busy.request_id, USAGE)
    assert q2.request_id == "q2" and core.take_releases() == []
    core.request_finished("q2", USAGE)
    assert core.take_releases() == [("s", replica)]
