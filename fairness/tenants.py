"""Tenants: who shares the fleet, with which weight and which service-level class.

Contract: `TenantsConfig` is the `tenants` section of the proxy's configuration (msgspec; unknown keys are
errors). A tenant is named by the first identity source that is present on a call (`identity`, in order:
header names such as `x-tenant-id` or `x-gateway-inference-fairness-id`, or `api-key` for the hash of the
Authorization header). Tenants not listed get `default`. `validate()` raises ValueError naming the bad key.
"""

from __future__ import annotations

import math

import msgspec

API_KEY_SOURCE = "api-key"
# A charge is divided by its tenant's weight: a weight near 0 (1e-320) makes the virtual time infinite, for
# good and for every tenant (the fair order becomes arrival order); a million to one is past any real share.
MIN_WEIGHT, MAX_WEIGHT = 1e-6, 1e6


class SloClass(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Service-level targets; None means no target (batch work)."""

    # A task meets its SLO when it completes within this factor x its time alone on an idle replica.
    tct_factor: float | None = None
    ttft_s: float | None = None  # a call meets its SLO when its first token comes within this


class TenantSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    weight: float = 1.0
    slo_class: str = "standard"


def _default_classes() -> dict[str, SloClass]:
    return {
        "interactive": SloClass(tct_factor=1.5, ttft_s=2.0),  # 1.5x: the published design's SLO
        "standard": SloClass(tct_factor=3.0),
        "batch": SloClass(),
    }


class TenantsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    identity: list[str] = msgspec.field(
        default_factory=lambda: ["x-tenant-id", "x-gateway-inference-fairness-id", API_KEY_SOURCE]
    )
    slo_classes: dict[str, SloClass] = msgspec.field(default_factory=_default_classes)
    tenants: dict[str, TenantSpec] = msgspec.field(default_factory=dict)
    default: TenantSpec = TenantSpec()

    def validate(self) -> None:
        if not self.identity:
            raise ValueError("tenants.identity: give at least one source (a header name or 'api-key')")
        for name, cls in self.slo_classes.items():
            for field in ("tct_factor", "ttft_s"):
                value = getattr(cls, field)
                if value is not None and not 0 < value < math.inf:  # inf: a target nothing misses
                    raise ValueError(
                        f"tenants.slo_classes.{name}.{field} must be > 0 and finite, got {value}"
                    )
        if "" in self.tenants:  # no call's tenant is empty (identity values: proxy/identity.py, check_id)
            raise ValueError("tenants.tenants: a tenant's name must not be empty")
        for name, spec in [("default", self.default), *self.tenants.items()]:
            where = "tenants.default" if name == "default" else f"tenants.tenants.{name}"
            if not MIN_WEIGHT <= spec.weight <= MAX_WEIGHT:
                raise ValueError(
                    f"{where}.weight must be between {MIN_WEIGHT:g} and {MAX_WEIGHT:g}, got {spec.weight}"
                )
            if spec.slo_class not in self.slo_classes:
                known = ", ".join(sorted(self.slo_classes))
                raise ValueError(f"{where}.slo_class {spec.slo_class!r} is not defined; known: {known}")

    def spec(self, tenant: str) -> TenantSpec:
        return self.tenants.get(tenant, self.default)

    def weight(self, tenant: str) -> float:
        return self.spec(tenant).weight

    def slo(self, tenant: str) -> SloClass:
        return self.slo_classes[self.spec(tenant).slo_class]

    def ttft_target_s(self, tenant: str) -> float | None:
        """`slo(tenant).ttft_s` in one method: the scheduler asks it on every dispatch and first token."""
        return self.slo_classes[self.tenants.get(tenant, self.default).slo_class].ttft_s

    def header_sources(self) -> tuple[str, ...]:
        return tuple(s.lower() for s in self.identity)
