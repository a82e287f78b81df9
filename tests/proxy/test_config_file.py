"""`saga serve --config FILE`: a file that is wrong in any way is a one-line ConfigError naming the file and
the fault, never a traceback, and YAML's silent last-one-wins for a repeated key is refused."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.scheduler import ConfigError
from proxy.serve_options import config_data

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"replicas: [http://a:1]\nport: 8000\nport: 9000\n",
            "key 'port' is given twice in one mapping (line 3)",
        ),
        (b"tenants:\n  tenants:\n    x: {weight: 1}\n    x: {weight: 2}\n", "key 'x' is given twice"),
        (b": bad: yaml: [\n", "is not valid YAML"),
        (b"\xff\xfe\x00", "cannot read the configuration file"),
        (b"? [a, b]\n: 1\n", "a key must be a plain value, not list (line 1)"),
        (b"a: " + b"[" * 50_000 + b"]" * 50_000 + b"\n", "nests too deeply"),
    ],
)
def test_a_bad_file_is_a_config_error_naming_it(tmp_path: Path, content: bytes, message: str) -> None:
    file = tmp_path / "saga.yaml"
    file.write_bytes(content)
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        config_data(file, {}, {})
    assert str(file) in str(e.value)


@pytest.mark.parametrize("name", ["missing.yaml", "."])
def test_a_file_that_cannot_be_read_is_a_config_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        config_data(tmp_path / name, {}, {})


def test_the_same_key_in_different_mappings_is_fine(tmp_path: Path) -> None:
    file = tmp_path / "saga.yaml"
    file.write_text("tenants:\n  tenants:\n    a: {weight: 1}\n    b: {weight: 1}\nqueue: {order: afs}\n")
    assert set(config_data(file, {}, {})) == {"tenants", "queue"}


def test_saga_serve_says_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "serve", "--config", str(tmp_path / "nope.yaml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert (
        result.stderr.strip().splitlines()[-1].startswith("saga: error: cannot read the configuration file")
    )
