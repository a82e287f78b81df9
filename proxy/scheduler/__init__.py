"""The sans-IO scheduler core and its routing framework (filters -> weighted scorers -> picker)."""

from proxy.scheduler.core import SchedulerCore
from proxy.scheduler.registry import PRESETS, ConfigError, PolicySpec, build_policy
from proxy.scheduler.types import Decision, Dispatch, ReplicaStats, Reject, RequestInfo, Usage

__all__ = [
    "PRESETS",
    "ConfigError",
    "Decision",
    "Dispatch",
    "PolicySpec",
    "ReplicaStats",
    "Reject",
    "RequestInfo",
    "SchedulerCore",
    "Usage",
    "build_policy",
]
