"""The imports run one way (docs/design.md): `simulator/` is the model of one vLLM replica and imports neither
the harness (`loadtests/`) nor the proxy; the pure cores (`predictor/`, `fairness/`, `proxy/scheduler/`)
import no I/O layer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN = {
    "simulator": ("loadtests", "proxy", "predictor", "fairness"),
    "predictor": ("loadtests", "simulator", "aiohttp", "proxy.app", "proxy.forward"),
    "fairness": ("loadtests", "simulator", "aiohttp", "proxy.app", "proxy.forward"),
    "proxy/scheduler": ("loadtests", "simulator", "aiohttp"),
}


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_run_one_way(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in _imports(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[package])
    ]
    assert not bad, "\n".join(bad)
