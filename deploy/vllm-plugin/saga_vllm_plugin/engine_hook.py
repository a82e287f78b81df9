"""`vllm.general_plugins` entry `saga_retention`: a `saga_retention(op, body)` method on vLLM's engine core.

Contract: `register()` (run by vLLM in every process it starts; idempotent) adds the method to
`vllm.v1.engine.core.EngineCore`. The API server calls it with the engine client's utility call
(`engine_core.call_utility_async("saga_retention", op, body)`), which vLLM runs on the engine thread between
steps, also when the engine is idle, so it may touch the block pool. It forwards to the scheduler's
`saga_command` and answers `{"status": 501, ...}` when the engine does not run the plugin's scheduler.
"""

from __future__ import annotations

from typing import Any

METHOD = "saga_retention"


def saga_retention(self: Any, op: str, body: dict[str, Any]) -> dict[str, Any]:
    command = getattr(self.scheduler, "saga_command", None)
    if command is None:
        return {
            "status": 501,
            "message": "this vLLM does not run saga_vllm_plugin's scheduler: start it with "
            "--scheduler-cls saga_vllm_plugin.scheduler.RetainingScheduler",
        }
    reply: dict[str, Any] = command(op, body)
    return reply


def register() -> None:
    from vllm.v1.engine.core import EngineCore

    if not hasattr(EngineCore, METHOD):
        setattr(EngineCore, METHOD, saga_retention)  # a new method on vLLM's class
