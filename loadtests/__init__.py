"""Agent workloads, the agent client, the demo and (later) the benchmark harness."""

import saga_native  # noqa: F401  (first: the compiled modules' stale-build guard)
