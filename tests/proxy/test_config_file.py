"""`saga serve --config FILE`: a file that is wrong in any way is a one-line ConfigError naming the file and
the fault, never a traceback, and YAML's silent last-one-wins for a repeated key is refused."""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from proxy.cli import build_parser
from proxy.config import ProxyConfig
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


def saga(*args: str) -> subprocess.CompletedProcess[str]:
    """`saga ARGS` run as a user runs it (a process of its own), its output captured."""
    command = [sys.executable, "-m", "proxy.cli", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The last line `saga` wrote to stderr, after checking it wrote no traceback."""
    assert "Traceback" not in result.stderr
    return result.stderr.strip().splitlines()[-1]


def test_saga_serve_says_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    result = saga("serve", "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode != 0
    assert error_line(result).startswith("saga: error: cannot read the configuration file")


def _documented_keys() -> dict[str, str]:
    """docs/config.md's "Keys" table: key -> its default column, backticks removed."""
    text = (ROOT / "docs" / "config.md").read_text()
    table = text.split("## Keys", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]*) \|", table, re.MULTILINE)
    return {key: default.strip().strip("`") for key, default in rows}


def test_every_key_is_documented_with_its_default() -> None:
    """docs/config.md lists every ProxyConfig key, and only those, each with the schema's default."""
    documented = _documented_keys()
    fields = {f.name: f for f in msgspec.structs.fields(ProxyConfig)}
    assert set(documented) == set(fields)
    for name, field in fields.items():
        shown = documented[name]
        default = field.default if field.default is not msgspec.NODEFAULT else field.default_factory()
        if isinstance(default, msgspec.Struct):
            continue  # a mapping with defaults of its own (tenants: docs/fairness.md)
        if default is None:
            assert shown == "none", name
        elif isinstance(default, bool):
            assert shown == str(default).lower(), name
        elif isinstance(default, int | float):
            assert float(shown) == default, name
        elif isinstance(default, list):
            assert shown == "[]", name
        else:
            assert shown == default, name


def _serve_parser() -> argparse.ArgumentParser:
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser: argparse.ArgumentParser = subparsers.choices["serve"]
    return parser


def test_every_scalar_key_has_a_flag_with_its_own_help() -> None:
    """`saga serve --help` explains each key's flag; a mapping key (tenants, queue, ...) has none: it comes
    from the file or JSON in SAGA_<KEY>, and a flag would only take a string the schema refuses."""
    actions = [a for a in _serve_parser()._actions if a.option_strings]
    by_flag = {flag: a for a in actions for flag in a.option_strings}
    for field in msgspec.structs.fields(ProxyConfig):
        flag = "--" + field.name.replace("_", "-")
        if field.name in ("replicas", "time_scale", "kv_events"):  # --replica; --simulate's --time-scale and
            continue  # --kv-events (the simulated replicas' publisher; the key's port: --kv-events-port)
        default = field.default if field.default is not msgspec.NODEFAULT else field.default_factory()
        if field.name in ("discovery", "api_keys", "queue") or isinstance(default, msgspec.Struct):
            assert flag not in by_flag, flag
            continue
        assert flag in by_flag, flag
        assert by_flag[flag].dest == field.name, flag
        assert (by_flag[flag].help or "").split(" (default: ")[0] != field.name, flag
    with pytest.raises(SystemExit):
        _serve_parser().parse_args(["--tenants", "{}"])


@pytest.mark.parametrize("command", ["serve --replica http://127.0.0.1:9 --health-timeout-s 0.2", "sim"])
def test_a_port_in_use_is_one_line_not_a_traceback(command: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        flag = "--port" if command.startswith("serve") else "--base-port"
        result = saga(*command.split(), flag, str(port))
    assert result.returncode == 1
    last = error_line(result)
    assert last.startswith("saga: error:") and "address already in use" in last.lower()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        # the socket layer took 99999 as port 34463 and listened there without a word
        ("serve --replica http://127.0.0.1:9 --port 99999", "port must be a tcp port"),
        ("serve --replica http://127.0.0.1:9 --port -1", "port must be a tcp port"),
        (
            "serve --replica http://127.0.0.1:9 --port 0 --health-timeout-s 0.2 --host no-such-host.invalid",
            "no-such-host",
        ),
        ("sim --host no-such-host.invalid", "name or service not known"),
        ("sim --replicas 2 --base-port 65535", "runs past port 65535"),
    ],
)
def test_a_place_to_listen_that_cannot_be_is_one_line_not_a_traceback(args: str, says: str) -> None:
    result = saga(*args.split())
    assert result.returncode in (1, 2)
    last = error_line(result)
    assert last.startswith("saga: error:") and says in last.lower(), last
