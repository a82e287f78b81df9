"""Agent Fair Share: tenants share the cluster by weight, charged in estimated GPU time, with a proved bound.

`FairQueue` is the release order (fifo, vtc, afs) with the bounded-deviation guarantee (docs/fairness.md);
`TenantsConfig` names tenants, weights and SLO classes; `GpuCostModel`/`TokenCostModel` price a call;
`SessionHistory` and `RemainingWork` estimate a call's cost and a workflow's remaining work; `TenantLedger`
keeps per-tenant service statistics. Pure: no I/O, no clock of its own.
"""

import saga_native  # noqa: F401  (first: the compiled modules' stale-build guard)
from fairness.cost import (
    CallEstimate,
    CallsSoFarEstimate,
    GpuCostModel,
    RemainingWork,
    SessionHistory,
    TokenCostModel,
)
from fairness.queue import ORDERS, FairQueue, FleetShare, Order
from fairness.stats import TenantLedger, jain_index
from fairness.tenants import SloClass, TenantsConfig, TenantSpec

__all__ = [
    "ORDERS",
    "CallEstimate",
    "CallsSoFarEstimate",
    "FairQueue",
    "FleetShare",
    "GpuCostModel",
    "Order",
    "RemainingWork",
    "SessionHistory",
    "SloClass",
    "TenantLedger",
    "TenantSpec",
    "TenantsConfig",
    "TokenCostModel",
    "jain_index",
]
