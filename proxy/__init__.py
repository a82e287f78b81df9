"""SAGA: workflow-aware scheduling proxy for AI-agent inference."""

import saga_native  # noqa: F401  (first: the compiled modules' stale-build guard)
