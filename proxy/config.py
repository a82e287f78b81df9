"""Proxy configuration: one msgspec struct, every field defaulted, validated when the proxy starts."""

from __future__ import annotations

import msgspec

from fairness.tenants import TenantsConfig
from proxy.scheduler.registry import PRESETS, ConfigError, PolicySpec
from proxy.scheduler.release import ReleaseQueueSpec


class ProxyConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    replicas: list[str]
    policy: str | PolicySpec = "session-affinity"
    host: str = "127.0.0.1"
    port: int = 8000
    seed: int | None = None
    health_interval_s: float = 2.0
    connect_timeout_s: float = 5.0
    # Between two bytes of an answer; long generations stream, so this bounds only a stalled replica.
    read_timeout_s: float = 600.0
    max_body_bytes: int = 64 * 1024 * 1024  # agent prompts reach 100k+ tokens of JSON
    session_idle_ttl_s: float = 3600.0
    # Tenants' identity sources, weights and SLO classes (fairness/tenants.py).
    tenants: TenantsConfig = msgspec.field(default_factory=TenantsConfig)
    # Hold calls in the proxy and release them in a fair order (proxy/scheduler/release.py); off when None.
    queue: ReleaseQueueSpec | None = None

    def validate(self) -> None:
        if not self.replicas:
            raise ConfigError("no replicas: give at least one --replica URL (or --simulate N)")
        for url in self.replicas:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"replica {url!r} is not an http(s) URL")
        if len(set(self.replicas)) != len(self.replicas):
            raise ConfigError("a replica URL is listed twice")
        if isinstance(self.policy, str) and self.policy not in PRESETS:
            raise ConfigError(f"unknown policy {self.policy!r}; known: {', '.join(sorted(PRESETS))}")
        for name in ("health_interval_s", "connect_timeout_s", "read_timeout_s", "session_idle_ttl_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0")
        try:
            self.tenants.validate()
        except ValueError as e:
            raise ConfigError(str(e)) from e
        if self.queue is not None:
            self.queue.validate()
