"""saga-vllm-plugin (deploy/vllm-plugin) serves the simulator's retention table, not a look-alike."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

from tests.real_vllm.plugin import require_plugin
from tests.real_vllm.real_vllm import require_real_vllm

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "deploy" / "vllm-plugin"


def test_the_plugin_ships_the_simulators_retention_table_byte_for_byte() -> None:
    simulator = (ROOT / "simulator" / "retention.py").read_bytes()
    shipped = (PLUGIN / "saga_vllm_plugin" / "retention_table.py").read_bytes()
    assert shipped == simulator, (
        "copy simulator/retention.py to deploy/vllm-plugin/saga_vllm_plugin/retention_table.py"
    )
    assert b"from simulator" not in simulator and b"import simulator" not in simulator


def test_one_vllm_plugins_name_enables_both_entry_points() -> None:
    meta = tomllib.loads((PLUGIN / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "saga-vllm-plugin"
    entry_points = meta["project"]["entry-points"]
    assert (
        set(entry_points["vllm.general_plugins"])
        == set(entry_points["vllm.endpoint_plugins"])
        == {"saga_retention"}
    )
    assert meta["project"]["dependencies"] == []  # never pulls a (GPU) vLLM over an installed one


def test_an_unsupported_vllm_is_refused_at_start_with_a_message_saying_so() -> None:
    require_plugin()
    python, _ = require_real_vllm()
    script = (
        "import vllm; vllm.__version__ = '0.40.1'\n"
        "from saga_vllm_plugin import UnsupportedVllmError, check_vllm_version\n"
        "try:\n    check_vllm_version()\nexcept UnsupportedVllmError as e:\n    print(e)\n"
        "else:\n    raise SystemExit('accepted')\n"
        "from saga_vllm_plugin.scheduler import RetainingScheduler\n"
        "try:\n    RetainingScheduler()\nexcept UnsupportedVllmError:\n    print('scheduler refused')\n"
    )
    run = subprocess.run([str(python), "-c", script], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "supports vLLM >=0.32,<0.33, but vLLM 0.40.1 is installed" in run.stdout
    assert "scheduler refused" in run.stdout
