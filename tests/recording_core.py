"""The real scheduler core, recording the usage each finished call reported (what the proxy read out of the
replica's answer), for tests that check what the scheduler learns."""

from __future__ import annotations

import time

from proxy.scheduler import Decision, SchedulerCore, Usage, build_policy


class RecordingCore(SchedulerCore):
    def __init__(self, replicas: list[str], policy: str = "round-robin") -> None:
        super().__init__(replicas, build_policy(policy, seed=1), time.monotonic)
        self.usages: list[Usage | None] = []

    def request_finished(self, request_id: str, usage: Usage | None = None) -> list[Decision]:
        self.usages.append(usage)
        return super().request_finished(request_id, usage)
