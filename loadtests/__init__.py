"""Agent workloads, the agent client, the demo and (later) the benchmark harness."""
