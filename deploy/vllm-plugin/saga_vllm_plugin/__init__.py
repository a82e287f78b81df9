"""SAGA's KV retention contract v2 (docs/retention-api.md) on stock vLLM, through its extension points only.

- `saga_vllm_plugin.scheduler.RetainingScheduler` (and `RetainingAsyncScheduler`, for async scheduling on
  GPUs), given to `--scheduler-cls`: holds block references for retained sessions and applies the contract's
  rules for who may break a retention.
- `vllm.general_plugins` entry `saga_retention`: adds `saga_retention(op, body)` to vLLM's engine core, so the
  API server reaches the scheduler on the engine thread with a utility call.
- `vllm.endpoint_plugins` entry `saga_retention`: `POST /saga/v1/retain`, `POST /saga/v1/release`,
  `GET /saga/v1/retained`, validation of the request fields, and the `saga:retained_*` metrics.
Enable both entries with `VLLM_PLUGINS=saga_retention`.
"""

from __future__ import annotations

import os

SUPPORTED_VLLM = ">=0.32,<0.33"
SKIP_VERSION_CHECK_ENV = "SAGA_VLLM_PLUGIN_SKIP_VERSION_CHECK"


class UnsupportedVllmError(RuntimeError):
    """The running vLLM is outside the range this plugin was built and tested against."""


def check_vllm_version() -> str:
    """The running vLLM's version; raises UnsupportedVllmError outside SUPPORTED_VLLM (unless the escape
    hatch SAGA_VLLM_PLUGIN_SKIP_VERSION_CHECK=1 is set, at the user's risk)."""
    import vllm
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    version = str(vllm.__version__)
    if os.environ.get(SKIP_VERSION_CHECK_ENV) == "1":
        return version
    if Version(Version(version).base_version) not in SpecifierSet(SUPPORTED_VLLM):
        raise UnsupportedVllmError(
            f"saga-vllm-plugin supports vLLM {SUPPORTED_VLLM}, but vLLM {version} is installed: its "
            f"scheduler interfaces are private and change between releases. Install a supported vLLM or a "
            f"saga-vllm-plugin built for {version} (set {SKIP_VERSION_CHECK_ENV}=1 to try anyway)."
        )
    return version
