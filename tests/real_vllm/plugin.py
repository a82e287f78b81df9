"""Real vLLM with saga-vllm-plugin (deploy/vllm-plugin): the flags that enable it and a check it is installed.

Contract: `require_plugin()` skips (fails under SAGA_REQUIRE_REAL_VLLM=1) unless the vLLM venv has the plugin
installed (`make real-vllm` installs it); `plugin_server_args(num_gpu_blocks)` and `PLUGIN_ENV` start a
server serving the retention contract with priority scheduling and a small KV cache.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.real_vllm.real_vllm import require_real_vllm

PLUGIN_ENV = {"VLLM_PLUGINS": "saga_retention"}


def plugin_server_args(num_gpu_blocks: int) -> list[str]:
    return [
        "--scheduler-cls", "saga_vllm_plugin.scheduler.RetainingScheduler",
        "--scheduling-policy", "priority",
        "--num-gpu-blocks-override", str(num_gpu_blocks),
    ]  # fmt: skip


def require_plugin() -> None:
    python, _ = require_real_vllm()
    probe = subprocess.run(
        [str(python), "-c", "import saga_vllm_plugin.engine_hook"], capture_output=True, timeout=120
    )
    if probe.returncode != 0:
        reason = "saga-vllm-plugin is not installed in the vLLM venv: run `make real-vllm`"
        if os.environ.get("SAGA_REQUIRE_REAL_VLLM") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
