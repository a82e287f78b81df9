"""Simulated vLLM replicas: an engine model served over vLLM's HTTP surface."""
