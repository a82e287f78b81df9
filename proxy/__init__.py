"""SAGA: workflow-aware scheduling proxy for AI-agent inference."""
