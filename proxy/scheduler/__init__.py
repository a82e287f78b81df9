"""The sans-IO scheduler core and its routing framework (filters -> weighted scorers -> picker)."""

from proxy.scheduler.core import SchedulerCore
from proxy.scheduler.registry import PRESETS, ConfigError, PolicySpec, build_policy
from proxy.scheduler.types import Decision, Dispatch, Reject, ReplicaStats, RequestInfo, Usage

__all__ = [
    "PRESETS",
    "ConfigError",
    "Decision",
    "Dispatch",
    "PolicySpec",
    "Reject",
    "ReplicaStats",
    "RequestInfo",
    "SchedulerCore",
    "Usage",
    "build_policy",
]
