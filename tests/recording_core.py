"""Scheduler cores that record what they are told, for tests that check what the scheduler learns:
`ArrivalsCore` keeps every call's RequestInfo as it arrived (any core's constructor arguments: the proxy's,
the discrete-event cluster's); `RecordingCore` is the real core of a proxy test, keeping those and the usage
each finished call reported (what the proxy read out of the replica's answer)."""

from __future__ import annotations

import time
from typing import Any

from proxy.scheduler import Decision, RequestInfo, SchedulerCore, Usage, build_policy


class ArrivalsCore(SchedulerCore):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals: list[RequestInfo] = []

    def request_arrived(self, req: RequestInfo) -> list[Decision]:
        self.arrivals.append(req)
        return super().request_arrived(req)


class RecordingCore(ArrivalsCore):
    def __init__(self, replicas: list[str], policy: str = "round-robin") -> None:
        super().__init__(replicas, build_policy(policy, seed=1), time.monotonic)
        self.usages: list[Usage | None] = []

    def request_finished(self, request_id: str, usage: Usage | None = None) -> list[Decision]:
        self.usages.append(usage)
        return super().request_finished(request_id, usage)
