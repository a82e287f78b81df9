"""Seedable agent workload generators. Each returns a list of `AgentTask`s."""
