"""Subagents (`RequestInfo.parent_session`): a subagent's session is its own workflow, but part of the one
that spawned it: admitted with it (never queued behind new workflows while its parent waits for it holding
KV) and ranked with it."""

from __future__ import annotations

import msgspec

from proxy.scheduler import RequestInfo, Usage
from tests.scheduler.test_saga_policy import CAPACITY, call, make_core, only_dispatch, seen_back


def spawned(req: RequestInfo, parent: str) -> RequestInfo:
    return msgspec.structs.replace(req, parent_session=parent, agent_type="explorer")


def test_a_subagent_of_an_admitted_workflow_is_admitted_at_once_while_new_workflows_wait() -> None:
    core, clock = make_core(replicas=1)
    seen_back(core)
    admission = core.admission
    assert admission is not None
    footprint = admission.footprint_of_new(call("x", prompt_tokens=30_000))
    fits = int(CAPACITY * admission.spec.overcommit) // footprint
    parents = [call(f"main{i}", prompt_tokens=30_000) for i in range(fits)]
    for req in parents:
        only_dispatch(core.request_arrived(req))
    clock.now = 1.0
    for req in parents:  # each main agent calls its Task tool and waits, its KV held
        core.request_finished(req.request_id, Usage(30_000, 200, finish_reason="tool_calls"))
    assert core.request_arrived(call("newcomer", prompt_tokens=30_000)) == []  # no room: a new workflow waits
    assert admission.is_waiting("newcomer")
    # the first main agent's subagent is part of an admitted workflow: in at once, though no replica has room
    sub = spawned(call("main0/agent-1", prompt_tokens=8_000), "main0")
    assert only_dispatch(core.request_arrived(sub)).replica_id == "r0"
    assert admission.is_admitted("main0/agent-1") and admission.is_waiting("newcomer")
    # a subagent whose parent the core does not know (or that waits itself) waits like any new workflow
    orphan = spawned(call("gone/agent-2", prompt_tokens=8_000), "gone")
    assert core.request_arrived(orphan) == []
    assert admission.is_waiting("gone/agent-2")


def test_a_subagent_ranks_with_the_workflow_that_spawned_it() -> None:
    core, clock = make_core(replicas=2)
    old = only_dispatch(core.request_arrived(first := call("old")))
    clock.now = 1.0
    core.request_finished(first.request_id, Usage(10_000, 100, finish_reason="tool_calls"))
    newer = only_dispatch(core.request_arrived(call("newer")))
    sub = only_dispatch(core.request_arrived(spawned(call("old/agent-1"), "old")))
    # workflow-age priority (lower first): the subagent of the oldest workflow goes before the newer workflow
    assert old.priority is not None and newer.priority is not None and sub.priority is not None
    assert sub.priority == old.priority < newer.priority
