"""`saga serve --config FILE`: a file that is wrong in any way is a one-line ConfigError naming the file and
the fault, never a traceback, and YAML's silent last-one-wins for a repeated key is refused."""

from __future__ import annotations

import argparse
import errno
import math
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest
import yaml

from proxy.app import create_app
from proxy.cli import build_parser
from proxy.config import KvEventsConfig, ProxyConfig
from proxy.context import CONFIG
from proxy.kv_events import endpoint_for
from proxy.scheduler import PRESETS, ConfigError, PolicySpec
from proxy.serve_options import build_config, config_data, proxy_config
from proxy.server import running_proxy

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


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ('port: "18390"', "Expected `int`, got `str` - at `$.port`"),
        ("workers: 2.0", "Expected `int`, got `float` - at `$.workers`"),
        ('access_log: "false"', "Expected `bool`, got `str` - at `$.access_log`"),
        ("connect_timeout_s: 1e-3", "a number with an exponent needs a dot in YAML: 1.0e-3"),
        ("tenants: {default: {weight: '2'}}", "Expected `float`, got `str` - at `$.tenants.default.weight`"),
    ],
)
def test_a_value_of_the_wrong_type_in_the_file_is_refused(tmp_path: Path, line: str, says: str) -> None:
    """docs/config.md says so; the file was converted as loosely as the environment's text was."""
    file = tmp_path / "saga.yaml"
    file.write_text(f"replicas: [http://a:1]\n{line}\n")
    with pytest.raises(ConfigError, match=re.escape(says)) as e:
        config_data(file, {}, {})
    assert str(file) in str(e.value)


def test_the_file_s_numbers_and_the_environment_s_text_are_taken_as_their_keys_want(tmp_path: Path) -> None:
    file = tmp_path / "saga.yaml"
    file.write_text("replicas: [http://a:1]\nconnect_timeout_s: 5\nfirst_byte_timeout_s: 1.0e+2\n")
    data = config_data(file, {"SAGA_PORT": "9000", "SAGA_ACCESS_LOG": "false"}, {})
    config = build_config(data)
    assert (config.connect_timeout_s, config.first_byte_timeout_s) == (5.0, 100.0)
    assert (config.port, config.access_log) == (9000, False)


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("SAGA_PORT", "abc", "SAGA_PORT='abc' is not a whole number"),
        ("SAGA_ACCESS_LOG", "off", "SAGA_ACCESS_LOG='off' is not true or false (or 1 or 0; any case)"),
        ("SAGA_SHUTDOWN_GRACE_S", "soon", "SAGA_SHUTDOWN_GRACE_S='soon' is not a number"),
        ("SAGA_SEED", "abc", "SAGA_SEED='abc' is not a whole number"),  # an optional key (int | None)
        ("SAGA_PORT", "1\r\nX-Injected: 1", "SAGA_PORT='1\\r\\nX-Injected: 1' is not a whole number"),
    ],
)
def test_a_bad_environment_value_is_refused_naming_its_variable(variable: str, value: str, says: str) -> None:
    """`SAGA_PORT=abc` said "Expected `int`, got `str` - at `$.port`", naming neither the variable nor its
    value, and a boolean's accepted spellings were said nowhere (the forty-fourth session's review)."""
    with pytest.raises(ConfigError) as e:
        config_data(None, {variable: value}, {})
    assert str(e.value) == says
    assert config_data(None, {"SAGA_ACCESS_LOG": "TRUE", "SAGA_TENANT_CACHE_SALT": "0"}, {}) == {
        "access_log": True,
        "tenant_cache_salt": False,
    }


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SAGA_SHUTDOWN_GRACE_S", "nan"),
        ("SAGA_SHUTDOWN_GRACE_S", "inf"),
        ("SAGA_CONNECT_TIMEOUT_S", "-inf"),
        ("SAGA_SHUTDOWN_GRACE_S", "1e400"),  # past a float: msgspec refuses it
        ("SAGA_PORT", "9" * 30),
        ("SAGA_SEED", "9" * 5000),
        ("SAGA_WORKERS", "1e3"),
        ("SAGA_HEALTH_TIMEOUT_S", " 5 "),
    ],
)
def test_non_finite_huge_or_padded_environment_numbers_are_refused(variable: str, value: str) -> None:
    """The environment's text converted per key (`_environment_value`), attacked: each a ConfigError, none
    taken (a NaN grace or a 5000-digit seed) and none a traceback."""
    with pytest.raises(ConfigError) as e:
        build_config(config_data(None, {variable: value, "SAGA_REPLICAS": "http://a:1"}, {}))
    assert len(str(e.value)) < 200, str(e.value)


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        (
            "SAGA_API_KEYS",
            "[1]",
            "SAGA_API_KEYS is not a valid api_keys (JSON, docs/config.md): Expected `object",
        ),
        (
            "SAGA_API_KEYS",
            '{"k": 1}',
            "SAGA_API_KEYS is not a valid api_keys (JSON, docs/config.md): Expected `str`",
        ),
        (
            "SAGA_QUEUE",
            '{"max_queued": "x"}',
            "SAGA_QUEUE is not a valid queue (JSON, docs/config.md): Expected",
        ),
        (
            "SAGA_TENANTS",
            '{"bogus": 1}',
            "SAGA_TENANTS is not a valid tenants (JSON, docs/config.md): Object",
        ),
        ("SAGA_DISCOVERY", "{", "SAGA_DISCOVERY must be a JSON object of the discovery keys"),
        ("SAGA_KV_EVENTS", "[" * 100_000 + "]" * 100_000, "SAGA_KV_EVENTS "),
    ],
)
def test_a_structured_key_s_bad_environment_json_is_refused_naming_its_variable(
    variable: str, value: str, says: str
) -> None:
    """`SAGA_API_KEYS='[1]'` said "... at `$.api_keys`", naming the key as the file would, not the variable
    (left by the forty-fourth session's eighteenth review)."""
    with pytest.raises(ConfigError) as e:
        config_data(None, {variable: value}, {})
    assert str(e.value).startswith(says), str(e.value)
    assert len(str(e.value)) < 200, str(e.value)


@pytest.mark.parametrize(
    ("environ", "flags", "says"),
    [
        ({"SAGA_WORKERS": "1000"}, {}, "SAGA_WORKERS: workers must be between 1 and 256, got 1000"),
        ({"SAGA_SHUTDOWN_GRACE_S": "nan"}, {}, "SAGA_SHUTDOWN_GRACE_S: shutdown_grace_s must be a finite"),
        ({"SAGA_PORT": "99999"}, {}, "SAGA_PORT: port must be a TCP port"),
        ({"SAGA_KV_EVENTS_PORT": "70000"}, {}, "SAGA_KV_EVENTS_PORT: kv_events.port must be a TCP port"),
        ({"SAGA_KV_EVENTS_PORT": "0x10"}, {}, "SAGA_KV_EVENTS_PORT='0x10' is not a whole number"),
        ({"SAGA_KV_EVENTS_PORT": " 5557 "}, {}, "SAGA_KV_EVENTS_PORT=' 5557 ' is not a whole number"),
        ({"SAGA_WORKERS": "2"}, {"workers": 1000}, "workers must be between 1 and 256, got 1000"),  # a flag
        # kv_events.port has a flag and a variable of its own over SAGA_KV_EVENTS (the twentieth review)
        ({"SAGA_KV_EVENTS_PORT": "70000", "SAGA_KV_EVENTS": "{}"}, {}, "SAGA_KV_EVENTS_PORT: kv_events.port"),
        ({"SAGA_KV_EVENTS": '{"port": 70000}'}, {}, "SAGA_KV_EVENTS: kv_events.port"),
        ({"SAGA_KV_EVENTS": "{}"}, {"kv_events_port": 70000}, "kv_events.port must be"),
        (
            {"SAGA_KV_EVENTS_PORT": "5557", "SAGA_KV_EVENTS": '{"max_sessions": 0}'},
            {},
            "SAGA_KV_EVENTS: kv_events",
        ),
        ({"SAGA_KV_EVENTS_PORT": "70000"}, {"kv_events": "tcp://x:1"}, "SAGA_KV_EVENTS_PORT"),  # --simulate's
        # messages not led by their key (the forty-sixth session's docs review)
        ({"SAGA_POLICY": "nosuch"}, {}, "SAGA_POLICY: unknown policy 'nosuch'"),
        ({"SAGA_POLICY": "nosuch"}, {"policy": "nope"}, "unknown policy 'nope'"),
    ],
)
def test_a_value_out_of_range_is_refused_naming_the_variable_it_came_from(
    environ: dict[str, str], flags: dict[str, Any], says: str
) -> None:
    """The range and finiteness checks run on the merged configuration, so `SAGA_WORKERS=1e3` was said as
    "workers must be between 1 and 256", and every bad `SAGA_KV_EVENTS_PORT` as "Expected `int | null`, got
    `str` - at `$.kv_events.port`" (the nineteenth review)."""
    args = argparse.Namespace(config=None, **flags)
    with pytest.raises(ConfigError) as e:
        proxy_config(args, ["http://a:1"], environ)
    assert str(e.value).startswith(says), str(e.value)


@pytest.mark.parametrize(
    ("environ", "flagged", "says"),
    [
        ({"SAGA_REPLICAS": "ftp://x"}, [], "SAGA_REPLICAS: replica 'ftp://x'"),
        ({"SAGA_REPLICAS": "http://a:1,http://a:1"}, [], "SAGA_REPLICAS: a replica URL is listed twice"),
        # the flags' list replaces the variable's: a bad one is the flags' (the second review of the change)
        ({"SAGA_REPLICAS": "http://ok:1"}, ["ftp://x"], "replica 'ftp://x'"),
        ({"SAGA_REPLICAS": "http://ok:1"}, ["http://a:1", "http://a:1"], "a replica URL is listed twice"),
    ],
)
def test_a_bad_replica_list_is_blamed_on_where_it_came_from(
    environ: dict[str, str], flagged: list[str], says: str
) -> None:
    with pytest.raises(ConfigError) as e:
        proxy_config(argparse.Namespace(config=None), flagged, environ)
    assert str(e.value).startswith(says), str(e.value)


def test_simulate_s_time_scale_out_of_range_names_its_variable() -> None:
    """`saga serve --simulate N` reads `time_scale` before the rest of the configuration (its fleet starts
    first): `SAGA_TIME_SCALE=0` was said without the variable there."""
    from proxy.serve_options import layered_time_scale

    with pytest.raises(ConfigError, match=r"^SAGA_TIME_SCALE: time_scale must be"):
        layered_time_scale(argparse.Namespace(config=None), {"SAGA_TIME_SCALE": "0"})
    with pytest.raises(ConfigError, match=r"^time_scale must be"):  # a flag's: no variable to name
        layered_time_scale(argparse.Namespace(config=None, time_scale=0.0), {"SAGA_TIME_SCALE": "1"})


@pytest.mark.parametrize("name", ["missing.yaml", "."])
def test_a_file_that_cannot_be_read_is_a_config_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        config_data(tmp_path / name, {}, {})


def test_the_same_key_in_different_mappings_is_fine(tmp_path: Path) -> None:
    file = tmp_path / "saga.yaml"
    file.write_text("tenants:\n  tenants:\n    a: {weight: 1}\n    b: {weight: 1}\nqueue: {order: afs}\n")
    assert set(config_data(file, {}, {})) == {"tenants", "queue"}


def saga(*args: str, environ: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`saga ARGS` run as a user runs it (a process of its own, `environ` added to its environment), its
    output captured."""
    command = [sys.executable, "-m", "proxy.cli", *args]
    env = {**os.environ, **(environ or {})}
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)


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
            assert shown == (default or '""'), name  # (an empty default is written "")


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


def test_every_option_of_every_command_says_what_it_is_and_its_default() -> None:
    """`saga sim --help` showed `--replicas`, `--base-port` and `--host` bare, and `saga demo`, `bench des`,
    `bench faults` and `bench fairness` seven more (the forty-fourth session's review)."""

    def options(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.Action]]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from options(sub, f"{path} {name}")
            elif action.option_strings and action.help is not argparse.SUPPRESS:
                yield f"{path} {action.option_strings[-1]}", action

    found = list(options(build_parser(), "saga"))
    assert len(found) > 150
    bare = [name for name, action in found if not action.help]
    assert not bare, bare
    shown = {name: action.help for name, action in found}
    assert "(default: 8100)" in shown["saga sim --base-port"] % {"default": 8100}
    assert "default" in shown["saga demo --sessions"]
    assert "(default: 0)" in shown["saga demo --seed"] % {"default": 0}  # a default of 0 said too


def test_a_port_another_supervisor_holds_while_its_workers_start_is_refused() -> None:
    """The supervisor's socket holds the port, bound and not listening, while its workers start: a second
    supervisor started within that second bound beside it (SO_REUSEADDR on both) and both served the port
    (the forty-fourth session's review of its fixes)."""
    from proxy.supervisor import hold_port

    with hold_port("127.0.0.1", 0) as first:
        port = first.getsockname()[1]
        with pytest.raises(OSError) as e:
            hold_port("127.0.0.1", port).close()
        assert e.value.errno == errno.EADDRINUSE
        with socket.socket() as worker:  # a worker still binds and listens beside it
            worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            worker.bind(("127.0.0.1", port))
            worker.listen()


def test_a_port_left_with_connections_in_time_wait_is_held() -> None:
    """A proxy that stopped closes its clients' connections first, which leaves them in TIME_WAIT on its port
    for a minute: the supervisor's held socket (no SO_REUSEADDR) could not bind then, so `saga serve
    --workers 2` refused to start right after a one-process proxy (the forty-seventh session's review)."""
    from proxy.supervisor import hold_port, release_port_lock

    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        served, _ = listener.accept()
        served.close()  # the server's side closes first: its end of the connection goes to TIME_WAIT
        client.recv(1)
        client.close()
    try:
        with hold_port("127.0.0.1", port) as held:
            assert held.getsockname()[1] == port
            # held beside them (SO_REUSEADDR), a probe would pass until its workers listen: another
            # supervisor started meanwhile held the port too (the forty-seventh session's review of the fix)
            with pytest.raises(OSError) as e:
                hold_port("127.0.0.1", port).close()
            assert e.value.errno == errno.EADDRINUSE
    finally:
        release_port_lock(port)


@pytest.mark.parametrize("simulate", [[], ["--simulate", "1"]])
def test_an_unknown_variable_is_still_said_when_the_configuration_is_refused(simulate: list[str]) -> None:
    """With `--simulate`, a configuration refused before the proxy's own (the fleet's time scale) lost the
    unknown-variable warning that may explain it (the eighteenth review)."""
    unknown = "SAGA_" + "TIMESCALE"  # (spelt apart: the test above takes each SAGA_ name here as read)
    environ = {unknown: "2", "SAGA_TIME_SCALE": "0"}
    result = saga("serve", "--replica", "http://127.0.0.1:9", *simulate, environ=environ)
    assert result.returncode == 2, result.stderr
    assert f"saga: warning: '{unknown}' is set but is no setting" in result.stderr, result.stderr
    assert "did you mean SAGA_TIME_SCALE?" in result.stderr and error_line(result).startswith("saga: error:")


def test_a_host_name_too_long_to_encode_is_one_line() -> None:
    """`SAGA_HOST=<70 x's>` ended in a traceback (IDNA refuses a DNS label over 63 characters)."""
    result = saga("serve", "--replica", "http://127.0.0.1:9", environ={"SAGA_HOST": "x" * 70})
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert error_line(result).startswith("saga: error: cannot listen on host"), result.stderr


@pytest.mark.parametrize(
    ("mine", "theirs"), [("127.0.0.1", "127.0.0.1"), ("127.0.0.1", "0.0.0.0"), ("0.0.0.0", "127.0.0.1")]
)
def test_two_supervisors_at_the_same_instant_do_not_both_hold_the_port(mine: str, theirs: str) -> None:
    """Probe and hold are two steps: two supervisors started at once both passed their probes and held the
    port together (1 of 20 tries, the eighteenth review), and with a lock named for the address, so did two
    spelling the host apart, 127.0.0.1 and 0.0.0.0 (10-15 of 150-300 tries, the nineteenth review). Here
    the other takes the port's window and binds as its held socket does while this one starts: exactly one
    of them holds the port."""
    from proxy.supervisor import _bind_window, hold_port

    with hold_port("127.0.0.1", 0) as free:
        port = free.getsockname()[1]
    in_window, theirs_held = threading.Event(), []

    def other_supervisor() -> None:
        with _bind_window(port):
            in_window.set()
            time.sleep(0.2)  # this one starts meanwhile
            held = socket.socket()
            held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                held.bind((theirs, port))
                theirs_held.append(held)
            except OSError:
                held.close()

    other = threading.Thread(target=other_supervisor)
    other.start()
    in_window.wait(5)
    try:
        mine_held = hold_port(mine, port)
    except OSError as e:
        assert e.errno == errno.EADDRINUSE
        mine_held = None
    other.join()
    try:
        assert (mine_held is not None) + len(theirs_held) == 1, (mine_held, theirs_held)
    finally:
        for sock in [mine_held, *theirs_held]:
            if sock is not None:
                sock.close()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_another_proxys_workers_listen_on_is_refused(workers: str) -> None:
    """Another `saga serve --workers` on the port (listening with SO_REUSEPORT, as the workers do): a second
    one with workers joined it, and the kernel spread clients over both proxies (the forty-fourth session's
    review: one session's 40 calls went 25 to one replica set and 15 to the other)."""
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = saga("serve", "--replica", "http://127.0.0.1:9", "--workers", workers, "--port", str(port))
    assert result.returncode == 1
    last = error_line(result)
    assert last.startswith("saga: error:") and "address already in use" in last.lower(), last


def test_a_taken_ipv6_port_is_said_with_the_address_in_brackets() -> None:
    """`cannot bind ::1:8000` (the nineteenth review): an IPv6 address and its port are `[::1]:8000`."""
    try:
        taken = socket.socket(socket.AF_INET6)
        taken.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with taken:
        taken.listen()
        port = taken.getsockname()[1]
        result = saga(
            "serve", "--replica", "http://127.0.0.1:9", "--workers", "2", "--host", "::1", "--port", str(port)
        )
    assert error_line(result).startswith(f"saga: error: cannot bind [::1]:{port}: "), result.stderr


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


@pytest.mark.parametrize("given_by", ["file", "environment"])
def test_a_host_that_does_not_resolve_is_named_however_it_was_given(tmp_path: Path, given_by: str) -> None:
    """From the file or SAGA_HOST the error said "the configured host", naming none (docs/config.md says
    one line naming it)."""
    args = ["serve", "--replica", "http://127.0.0.1:9", "--port", "0", "--health-timeout-s", "0.2"]
    environ = {}
    if given_by == "file":
        (tmp_path / "saga.yaml").write_text("host: no-such-host.invalid\n")
        args += ["--config", str(tmp_path / "saga.yaml")]
    else:
        environ["SAGA_HOST"] = "no-such-host.invalid"
    result = saga(*args, environ=environ)
    assert result.returncode == 1
    assert error_line(result) == (
        "saga: error: cannot listen on host 'no-such-host.invalid': Name or service not known"
    )


def test_a_misspelt_saga_variable_is_warned_of_not_silently_ignored() -> None:
    """The file refuses an unknown key; an unknown SAGA_* variable was dropped without a word."""
    from proxy.serve_options import unknown_variables

    environ = {
        "SAGA_PROT": "9000",
        "SAGA_UPSTREAM_APIKEY": "k",
        "SAGA_BOGUS": "1",
        "SAGA_PORT": "1",
        "HOME": "/",
    }
    environ |= {"SAGA_PURE_PYTHON": "1", "SAGA_KV_EVENTS_PORT": "5557", "SAGA_WORKER_INDEX": "0"}
    warnings = unknown_variables(environ)
    assert warnings == [
        "'SAGA_BOGUS' is set but is no setting of saga serve: ignored (docs/config.md lists the settings)",
        "'SAGA_PROT' is set but is no setting of saga serve: ignored; did you mean SAGA_PORT?",
        "'SAGA_UPSTREAM_APIKEY' is set but is no setting of saga serve: ignored; did you mean "
        "SAGA_UPSTREAM_API_KEY?",
    ]
    result = saga("serve", "--port", "99999", environ={"SAGA_PROT": "9000"})  # said before any other error
    assert "saga: warning: 'SAGA_PROT' is set but is no setting" in result.stderr


def test_no_saga_variable_the_repository_reads_is_warned_of() -> None:
    """The vLLM plugin's SAGA_RETAIN_* and the tests' SAGA_TINY_MODEL and SAGA_CONTRACT_VLLM_URL were warned
    of as no setting (a machine running both the plugin and the proxy, or the test suite, set them)."""
    from proxy.serve_options import unknown_variables

    named = set()
    for path in [*ROOT.glob("**/*.py"), *ROOT.glob("deploy/**/Dockerfile"), ROOT / "Makefile"]:
        if {".venv", "build", "results", ".venv-vllm"} & set(path.parts) or path.name == Path(__file__).name:
            continue
        named |= set(
            re.findall(r"[\"'\s](SAGA_[A-Z0-9_]*[A-Z0-9])(?=[\"'=\s])", path.read_text(errors="ignore"))
        )
    assert {"SAGA_RETAIN_MAX_TTL_S", "SAGA_TINY_MODEL", "SAGA_PORT"} <= named  # (the search finds them)
    assert unknown_variables(dict.fromkeys(named, "1")) == []


SECRETS = ("sekrit", "sk-team", "s3cret")  # never shown in an error: they are credentials


@pytest.mark.parametrize(
    ("data", "named"),
    [
        # an empty admin token opened the admin API to anyone (with api_keys set: shut it to everyone)
        ({"admin_token": ""}, "admin_token must be non-empty"),
        # a line break in the upstream key injected header lines into every request to the replicas
        ({"upstream_api_key": "sekrit\r\nX-Injected: yes"}, "upstream_api_key holds a control character"),
        ({"upstream_api_key": "sekrit\n"}, "upstream_api_key holds a control character"),
        ({"upstream_api_key": ""}, "upstream_api_key must be non-empty"),
        # not ASCII: every request to a replica failed to encode its head
        ({"upstream_api_key": "sekrit-\u20ac"}, "upstream_api_key holds a character outside ASCII"),
        # keys no client can present (a header carries no line break; the presented token is stripped):
        # accepted, then every call was a 401
        ({"api_keys": {"sk-team-a\n": "team-a"}}, "api_keys: the key of tenant 'team-a' holds a control"),
        ({"api_keys": {" sk-team-b": "team-b"}}, "api_keys: the key of tenant 'team-b' holds a control"),
        ({"api_keys": {"sk-team\tc": "team-c"}}, "api_keys: the key of tenant 'team-c' holds a control"),
        ({"admin_token": "admin-s3cret\n"}, "admin_token holds a control character"),
        # a tiny weight made the release queue's virtual time infinite for good (vtc became arrival order)
        ({"tenants": {"tenants": {"x": {"weight": 1e-320}}}}, "tenants.tenants.x.weight must be between"),
        ({"tenants": {"default": {"weight": math.inf}}}, "tenants.default.weight must be between"),
        ({"tenants": {"tenants": {"x": {"weight": 1e7}}}}, "tenants.tenants.x.weight must be between"),
        ({"queue": {"token_cost": {"input_weight": math.inf}}}, "queue.token_cost.input_weight must be"),
        ({"queue": {"gpu_cost": {"per_call_s": -1.0}}}, "queue.gpu_cost.per_call_s must be"),
        ({"queue": {"gpu_cost": {"decode_token_s": math.nan}}}, "queue.gpu_cost.decode_token_s must be"),
        # values nested in a mapping that only the top level's finite check would have caught
        ({"queue": {"age_bound_s": math.inf}}, "queue.age_bound_s must be > 0 and finite"),
        ({"queue": {"active_window_s": math.inf}}, "queue.active_window_s must be > 0 and finite"),
        ({"queue": {"expected_calls": 0}}, "queue.expected_calls must be between 1 and"),
        ({"queue": {"default_output_tokens": -5}}, "queue.default_output_tokens must be between 1 and"),
        (
            {"tenants": {"slo_classes": {"interactive": {"ttft_s": math.inf}}}},
            "tenants.slo_classes.interactive.ttft_s must be > 0 and finite",
        ),
        # discovery that could never reach anything
        ({"discovery": {"name": "vllm.svc", "port": 99999}}, "discovery.port must be a TCP port"),
        ({"discovery": {"name": "vllm.svc", "port": 0}}, "discovery.port must be a TCP port"),
        ({"discovery": {"name": "vllm.svc", "port": -5}}, "discovery.port must be a TCP port"),
        ({"discovery": {"name": ""}}, "discovery.name must be a DNS name"),
        ({"discovery": {"name": "a b\x00"}}, "discovery.name must be a DNS name"),
        # intervals that spun the proxy (~2,700 probes a second to a replica)
        ({"health_interval_s": 1e-9}, "health_interval_s must be >= 0.05"),
        ({"discovery": {"name": "vllm.svc", "interval_s": 1e-9}}, "discovery.interval_s must be >= 1"),
        # KV event endpoints a replica's /kv_event_sources may not list: a warning every second, for good
        (
            {"kv_events": {"endpoints": {"http://a:1": "tcp://127.0.0.1"}}},
            "kv_events.endpoints['http://a:1']",
        ),
        ({"kv_events": {"endpoints": {"http://a:1": "tcp://127.0.0.1:99999"}}}, "not a TCP port"),
        ({"kv_events": {"endpoints": {"http://a:1": "tcp://a b:5557"}}}, "not a host name or address"),
        ({"kv_events": {"endpoints": {"a:1": "tcp://a:5557"}}}, "kv_events.endpoints: the key 'a:1'"),
        # an empty host listened on every interface; an empty api_keys turned client authentication off
        ({"host": ""}, "host is empty"),
        ({"host": "  "}, "host is empty"),
        ({"api_keys": {}}, "api_keys is empty"),
        ({"tenants": {"tenants": {"": {"weight": 2.0}}}}, "a tenant's name must not be empty"),
        # one replica spelled twice was accepted as two, then merged into one behind the operator's back
        ({"replicas": ["http://a:1", "http://a:1"]}, "a replica URL is listed twice"),
        (
            {"replicas": ["http://a:1", "http://a:1/"]},
            "('http://a:1' and 'http://a:1/' name the same replica)",
        ),
        (
            {"replicas": ["http://h:8000", "http://H:08000"]},
            "'http://h:8000' and 'http://H:08000' name the same",
        ),
        ({"replicas": ["https://h", "https://h:443/"]}, "'https://h' and 'https://h:443/' name the same"),
        (
            {"kv_events": {"endpoints": {"http://a:1": "tcp://a:5557", "http://a:1/": "tcp://a:5558"}}},
            "kv_events.endpoints: a replica URL is listed twice",
        ),
    ],
)
def test_a_bad_value_is_refused_at_start_naming_its_key(data: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)) as e:
        build_config({"replicas": ["http://a:1"], **data})
    message = str(e.value)
    assert "\n" not in message and not any(secret in message for secret in SECRETS), message


@pytest.mark.parametrize(
    "data",
    [
        {"admin_token": "tok en", "upstream_api_key": "k", "api_keys": {"sk-1 2": "a"}},  # spaces inside
        {"tenants": {"tenants": {"x": {"weight": 1e-6}, "y": {"weight": 1e6}}}},
        {"queue": {"token_cost": {"input_weight": 0.0, "output_weight": 1e6}}},
        {"health_interval_s": 0.05, "discovery": {"name": "10.0.0.1", "port": 65535, "interval_s": 1}},
        {"kv_events": {"endpoints": {"http://a:1": "tcp://*:5557", "http://b:2/": "ipc:///tmp/kv"}}},
        {"replicas": ["http://a:1", "https://a:1", "http://a:1/v2", "http://a:2", "http://b:1"]},  # all apart
    ],
)
def test_the_limits_themselves_are_accepted(data: dict[str, Any]) -> None:
    build_config({"replicas": ["http://a:1"], **data})


@pytest.mark.parametrize(
    ("environ", "says"),
    [
        ({"SAGA_ADMIN_TOKEN": ""}, "SAGA_ADMIN_TOKEN: admin_token must be non-empty"),
        ({"SAGA_UPSTREAM_API_KEY": "sekrit\r\nX-Injected: yes"}, "SAGA_UPSTREAM_API_KEY: upstream_api_key"),
    ],
)
def test_saga_serve_refuses_a_bad_credential_in_one_line(environ: dict[str, str], says: str) -> None:
    result = saga("serve", "--replica", "http://127.0.0.1:9", "--port", "0", environ=environ)
    assert result.returncode == 2
    last = error_line(result)
    assert last.startswith(f"saga: error: {says}") and "sekrit" not in result.stderr + result.stdout


def test_kv_event_endpoints_are_keyed_as_the_replicas_are() -> None:
    """A key with a trailing slash was never matched (replica URLs lose theirs) and was silently ignored; a
    wildcard host is the replica's, as for an endpoint the replica lists itself."""
    endpoints = {"http://a:1/": "tcp://a:7000", "http://b:2": "tcp://*:7001"}
    kv_events = KvEventsConfig(port=None, endpoints=endpoints)
    app = create_app(ProxyConfig(replicas=["http://a:1/", "http://b:2"], kv_events=kv_events))
    config = app[CONFIG].kv_events
    assert config is not None
    assert endpoint_for("http://a:1", config) == "tcp://a:7000"
    assert endpoint_for("http://b:2", config) == "tcp://b:7001"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        # refused as "not valid YAML": the loader constructed the merge key itself
        (
            "gold: &gold {weight: 4, slo_class: interactive}\nsilver:\n  <<: *gold\n  weight: 2\n",
            {
                "gold": {"weight": 4, "slo_class": "interactive"},
                "silver": {"weight": 2, "slo_class": "interactive"},
            },
        ),
        (  # the first of several merged mappings wins, and the mapping's own key over all of them
            "a: &a {weight: 1, slo_class: batch}\nb: &b {<<: *a, weight: 2}\n"
            "c: {<<: [*b, *a], slo_class: standard}\nd: {<<: [*b, *a]}\n",
            {
                "a": {"weight": 1, "slo_class": "batch"},
                "b": {"weight": 2, "slo_class": "batch"},
                "c": {"weight": 2, "slo_class": "standard"},
                "d": {"weight": 2, "slo_class": "batch"},
            },
        ),
    ],
)
def test_yaml_merge_keys_work_and_the_mapping_s_own_key_wins(
    tmp_path: Path, content: str, expected: dict[str, Any]
) -> None:
    file = tmp_path / "saga.yaml"
    file.write_text(f"tenants:\n  tenants:\n{textwrap.indent(content, '    ')}")
    assert config_data(file, {}, {}) == {"tenants": {"tenants": expected}}
    assert yaml.safe_load(file.read_text()) == {"tenants": {"tenants": expected}}


@pytest.mark.parametrize(
    "content",
    ["a: &a {x: 1}\nb: {<<: *a, y: 1, y: 2}\n", "a: &a {x: 1}\nb: {<<: *a, <<: *a}\n"],
)
def test_a_key_given_twice_beside_a_merge_is_still_refused(tmp_path: Path, content: str) -> None:
    file = tmp_path / "saga.yaml"
    file.write_text(content)
    with pytest.raises(ConfigError, match="is given twice in one mapping"):
        config_data(file, {}, {})


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
@pytest.mark.parametrize("server", ["fast", "aiohttp"])
async def test_an_ipv6_host_is_listened_on_at_a_bracketed_url(server: str) -> None:
    """`--host ::1` printed `listening on http://::1:PORT`, no URL (the supervisor's line bracketed it)."""
    cfg = ProxyConfig(
        replicas=["http://127.0.0.1:9"], host="::1", port=0, health_timeout_s=0.2, server=server
    )
    async with running_proxy(cfg) as url:
        assert re.fullmatch(r"http://\[::1\]:\d+", url), url
        assert urlsplit(url).port is not None


def test_one_setting_of_a_preset_is_changed_by_naming_the_preset() -> None:
    """Found by an operator's review: `policy: {admission: {max_wait_s: 60}}` was refused (no `picker`),
    and a whole policy written to change it dropped the preset's other settings unsaid."""
    saga = PRESETS["saga"]
    assert saga.admission is not None
    config = build_config(
        {"replicas": ["http://a:1"], "policy": {"preset": "saga", "admission": {"max_wait_s": 60}}}
    )
    assert isinstance(config.policy, PolicySpec) and config.policy.admission is not None
    assert config.policy.admission == msgspec.structs.replace(saga.admission, max_wait_s=60.0)
    assert msgspec.structs.replace(config.policy, admission=saga.admission) == saga  # the rest: the preset's
    # without `preset` (or `picker`: a policy written whole), the default preset's
    assert build_config({"replicas": ["http://a:1"], "policy": {"admission": {"max_wait_s": 60}}}) == config
    off = build_config({"replicas": ["http://a:1"], "policy": {"preset": "saga", "admission": None}})
    assert isinstance(off.policy, PolicySpec) and off.policy.admission is None
    with pytest.raises(ConfigError, match=re.escape("policy.preset: unknown preset 'sagaa'")):
        build_config({"replicas": ["http://a:1"], "policy": {"preset": "sagaa"}})
    with pytest.raises(ConfigError, match="unknown field `max_wait`"):
        build_config({"replicas": ["http://a:1"], "policy": {"preset": "saga", "admission": {"max_wait": 1}}})


def test_one_setting_of_a_preset_is_changed_in_the_file(tmp_path: Path) -> None:
    """The file's strict type check read the policy before it was spelled out: still refused (`picker`)."""
    file = tmp_path / "saga.yaml"
    file.write_text("replicas: [http://a:1]\npolicy:\n  admission: {max_wait_s: 60.0}\n")
    config = build_config(config_data(file, {}, {}))
    assert isinstance(config.policy, PolicySpec) and config.policy.admission is not None
    assert config.policy.admission.max_wait_s == 60.0 and config.policy.stealing is not None
