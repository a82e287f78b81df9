"""Whether a run over simulated replicas kept pace with wall-clock time, and the warning when it did not.

Simulated replicas (simulator.driver) run their engine against wall time; when the host is too busy they
fall behind their clock (`ReplicaDriver.lag_s`) and no longer run at the speed the run models, which blurs
the differences between policies: `saga demo` gave 0.96-1.06x on a busy 2-core machine where quiet runs gave
1.18-1.25x. `saga demo` and `saga bench live` print this warning under their tables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# Over this share of a run spent behind schedule, the figures are not the modelled replicas' any more.
LAG_WARNING_SHARE = 0.02


def lag_share(wall_s: float, lag_s: float) -> float:
    return lag_s / wall_s if wall_s > 0 else 0.0


def busy_host_warning(runs: Mapping[str, tuple[float, float]]) -> str:
    """`runs`: name -> (wall seconds, the most wall seconds a replica fell behind). A warning naming the runs
    whose replicas fell behind for more than LAG_WARNING_SHARE of their time, or "" when none did."""
    late = {name: run for name, run in runs.items() if lag_share(*run) > LAG_WARNING_SHARE}
    if not late:
        return ""
    named = ", ".join(f"{name} {lag_share(*run):.0%} of {run[0]:.0f} s" for name, run in late.items())
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"Warning: the simulated replicas fell behind their clock ({named}; load average {load:.1f} on "
        f"{cores} cores). This host was too busy to run them at the modelled speed, so the figures above "
        "understate the differences between policies. Rerun on a quieter machine, or with a smaller "
        "--time-scale."
    )
