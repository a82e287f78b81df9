"""saga-vllm-plugin (deploy/vllm-plugin) serves the simulator's retention table, not a look-alike."""

from __future__ import annotations

import tomllib
from pathlib import Path

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
