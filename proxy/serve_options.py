"""`saga serve`'s configuration flags (one per ProxyConfig key) and the layering of file, environment, flags.

Precedence, lowest first: ProxyConfig's defaults, the YAML file (`--config`), `SAGA_<KEY>` environment
variables (e.g. `SAGA_PORT=9000`, `SAGA_STREAM_IDLE_TIMEOUT_S=30`), then command-line flags
(`--stream-idle-timeout-s 30`). Unknown keys in the file are errors naming the key; so are a key given twice
in one mapping (YAML would keep the last silently), a file that cannot be read and one that is not YAML.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import yaml

from proxy.config import ProxyConfig
from proxy.scheduler import PRESETS, ConfigError
from proxy.scheduler.registry import with_preset

_HELP = {
    "policy": f"routing policy: {', '.join(sorted(PRESETS))}",
    "host": "address to listen on",
    "port": "port to listen on",
    "seed": "seed for randomised policies",
    "health_interval_s": "seconds between health probes of each replica",
    "health_timeout_s": "timeout of one health probe (/health, then /metrics)",
    "unhealthy_after": "consecutive failed probes before a replica is marked down",
    "healthy_after": "consecutive good probes before a down replica is marked up",
    "breaker_failures": "consecutive failed calls that open a replica's circuit breaker",
    "breaker_cooldown_s": "seconds a replica's open circuit breaker keeps it out",
    "connect_timeout_s": "timeout to connect to a replica",
    "first_byte_timeout_s": "timeout until a replica's status line (a whole non-streaming generation)",
    "stream_idle_timeout_s": "timeout between two chunks of a streamed answer",
    "max_retries": "retries on another replica after a connect error or 5xx before the first byte",
    "priority_reprobe_s": "seconds a replica that refused a request priority gets calls without one",
    "shutdown_grace_s": "seconds the calls in progress may finish after SIGTERM, SIGINT or SIGHUP",
    "retry_after_s": "Retry-After sent with 429/503 refusals",
    "max_body_bytes": "largest request body accepted (413 above)",
    "max_answer_bytes": "largest whole (non-streaming) answer relayed from a replica (502 above)",
    "session_idle_ttl_s": "seconds an idle session is remembered",
    "single_call_session_ttl_s": "seconds an idle one-call session with an inferred id is remembered",
    "max_sessions": "sessions remembered at most (the least recently seen idle one evicted, one-shots first)",
    "upstream_api_key": "API key sent to the replicas (vLLM's --api-key)",
    "access_log": "one log line per request on the saga.access logger",
    "admin_token": "token the /saga/v1/* admin routes require",
    "tenant_cache_salt": "with api_keys, each tenant's calls carry a vLLM cache_salt of its own",
    "log_format": "text or json",
    "cors_allowed_origins": "origins whose browser clients may call the proxy (CORS): *, origins, or ''",
    "server": "fast (the call routes on a uvloop + httptools server, the rest on aiohttp) or aiohttp",
    "workers": "proxy processes sharing the port; each session is scheduled by one of them",
}
# keys whose value is a mapping: an environment variable gives them as JSON (SAGA_KV_EVENTS='{"port": 5557}')
_STRUCTURED = {"discovery", "api_keys", "kv_events", "tenants", "queue"}
# No generic flag: --replica / --simulate, --time-scale (shared with --simulate: below), and the structured
# keys (the YAML file, or JSON in SAGA_<KEY>; kv_events: also --kv-events-port, below)
_SKIPPED = {"replicas", "time_scale", *_STRUCTURED}


def _scalar_type(default: Any) -> Any:
    if isinstance(default, bool):
        return None
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float
    return str


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per ProxyConfig key; flags default to None so that unset ones leave file and env values."""
    for field in msgspec.structs.fields(ProxyConfig):
        if field.name in _SKIPPED:
            continue
        default = field.default
        flag = "--" + field.name.replace("_", "-")
        shown = "none" if default is None else default
        text = f"{_HELP.get(field.name, field.name)} (default: {shown}; env SAGA_{field.name.upper()})"
        if isinstance(default, bool):
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, help=text)
        elif field.name == "seed":
            parser.add_argument(flag, dest=field.name, type=int, help=text)
        else:
            parser.add_argument(flag, dest=field.name, type=_scalar_type(default), help=text)
    parser.add_argument(
        "--kv-events-port",
        type=int,
        metavar="PORT",
        help="subscribe to the replicas' vLLM KV-cache events on PORT of each replica's host (vLLM "
        "--kv-events-config endpoint tcp://*:PORT): exact prefix residency for stealing and prefix scoring "
        "(default: off; the YAML key kv_events has the other options; env SAGA_KV_EVENTS_PORT)",
    )


_MERGE = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping. Checked as each mapping is composed:
    the safe loader's merge keys (`<<: *anchor`) then rewrite the nodes in place, so a key a merge brought
    in (which the mapping's own may override, as YAML says) is never taken for the mapping's own."""

    def compose_mapping_node(self, anchor: Any) -> yaml.MappingNode:
        node: yaml.MappingNode = super().compose_mapping_node(anchor)
        seen: set[Any] = set()
        for key_node, _ in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                kind = "list" if isinstance(key_node, yaml.SequenceNode) else "dict"
                raise ConfigError(f"a key must be a plain value, not {kind} (line {line})")
            key = "<<" if key_node.tag == _MERGE else self.construct_object(key_node)
            if not isinstance(key, str | int | float | bool | None):
                raise ConfigError(f"a key must be a plain value, not {type(key).__name__} (line {line})")
            if key in seen:
                raise ConfigError(f"the key {key!r} is given twice in one mapping (line {line})")
            seen.add(key)
        return node


def read_config_file(file: Path) -> Any:
    """The file's YAML, or ConfigError saying why not (no traceback for a typo in a path or a file)."""
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the configuration file {file}: {e}") from e
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except ConfigError as e:
        raise ConfigError(f"{file}: {e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{file} is not valid YAML: {e}") from e
    except RecursionError as e:
        raise ConfigError(f"{file} nests too deeply to be a configuration") from e


def _check_types(file: Path, loaded: dict[Any, Any]) -> None:
    """The file's values as typed as its keys want (`port: "8000"`, `workers: 2.0` or `access_log: "no"` stop
    the proxy): only environment variables, which are text, are converted from text."""
    try:
        msgspec.convert(_with_preset(loaded), ProxyConfig, strict=True)
    except msgspec.ValidationError as e:
        # YAML 1.1 (PyYAML's) reads an exponent without a dot as text: 1e-3 is "1e-3", 1.0e-3 a number
        text_for_float = "Expected `float`, got `str`" in str(e)
        hint = " (a number with an exponent needs a dot in YAML: 1.0e-3, not 1e-3)" if text_for_float else ""
        raise ConfigError(f"{file}: {e}{hint}") from None


def config_data(file: Path | None, environ: Mapping[str, str], flags: Mapping[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if file is not None:
        loaded = read_config_file(file)
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{file}: expected a mapping of ProxyConfig keys (docs/config.md)")
        _check_types(file, loaded)
        data.update(loaded)
    for field in msgspec.structs.fields(ProxyConfig):
        name = f"SAGA_{field.name.upper()}"
        value = environ.get(name)
        if value is None:
            continue
        if field.name == "replicas":
            data[field.name] = value.split(",")
        elif field.name in _STRUCTURED:
            data[field.name] = _structured_environment_value(name, value, field.name, field.type)
        else:
            data[field.name] = _environment_value(name, value, field.type)
    data.update({k: v for k, v in flags.items() if v is not None})
    return data


def _structured_environment_value(name: str, value: str, key: str, kind: Any) -> Any:
    """A structured key's JSON from its variable, checked against the key's type here, so that a wrong shape
    is said with the variable's name (`SAGA_API_KEYS='[1]'` said "... at `$.api_keys`", naming the key as in
    the file: the forty-fourth session's review). JSON has its own types: checked strictly, as the file is."""
    try:
        decoded = msgspec.json.decode(value)
    except (msgspec.DecodeError, RecursionError) as e:
        raise ConfigError(f"{name} must be a JSON object of the {key} keys: {e}") from None
    try:
        msgspec.convert(decoded, kind, strict=True)
    except msgspec.ValidationError as e:
        raise ConfigError(f"{name} is not a valid {key} (JSON, docs/config.md): {e}") from None
    except RecursionError:
        raise ConfigError(f"{name} nests too deeply to be a {key}") from None
    return decoded


_KINDS = {int: "a whole number", float: "a number", bool: "true or false (or 1 or 0; any case)"}


def _environment_value(name: str, value: str, kind: Any) -> Any:
    """An environment variable's text as its key's type: converted here, so that a bad one is said with the
    variable's name and value (`SAGA_PORT=abc` said "Expected `int`, got `str` - at `$.port`", naming neither,
    and `SAGA_ACCESS_LOG=off` did not say which spellings a boolean takes: the forty-fourth session's
    review)."""
    try:
        return msgspec.convert(value, kind, strict=False)
    except msgspec.ValidationError as e:
        shown = value if len(value) <= 64 else value[:64] + "..."
        others = [t for t in typing.get_args(kind) if t is not type(None)]  # an optional key's own type
        said = _KINDS.get(others[0] if len(others) == 1 else kind)
        raise ConfigError(f"{name}={shown!r} is not {said}" if said else f"{name}={shown!r}: {e}") from None


# SAGA_* variables read elsewhere than the configuration: the workers' own, the build's, the vLLM plugin's,
# the tests' and tools' (tests/proxy/test_config_file.py finds every one the repository reads)
_OTHER_VARIABLES = frozenset(
    {
        "SAGA_KV_EVENTS_PORT",
        "SAGA_WORKER_INDEX",
        "SAGA_WORKER_DIR",
        "SAGA_WORKER_COUNT",
        "SAGA_PURE_PYTHON",
        "SAGA_NO_COMPILE",
        "SAGA_TEST_SERVER",
        "SAGA_REQUIRE_REAL_VLLM",
        "SAGA_VLLM_VENV",
        "SAGA_VLLM_PLUGIN_SKIP_VERSION_CHECK",
        "SAGA_RETAIN_MAX_FRACTION",  # the vLLM plugin's (deploy/vllm-plugin)
        "SAGA_RETAIN_MAX_TTL_S",
        "SAGA_TINY_MODEL",
        "SAGA_CONTRACT_VLLM_URL",
        "SAGA_ROOT",
        "SAGA_TREE",  # the review scripts' tree (docs/results/reliability-s44/run.sh)
    }
)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each `SAGA_*` environment variable that is no setting (a misspelt `SAGA_PROT` was
    silently ignored, where the same key in the file is an error), naming the nearest setting."""
    settings = [f"SAGA_{f.name.upper()}" for f in msgspec.structs.fields(ProxyConfig)]
    known = {*settings, *_OTHER_VARIABLES}
    warnings = []
    for name in sorted(environ):
        if not name.startswith("SAGA_") or name in known or name.startswith("SAGA_TM_"):
            continue
        near = difflib.get_close_matches(name, [*settings, "SAGA_KV_EVENTS_PORT"], n=1, cutoff=0.8)
        hint = f"; did you mean {near[0]}?" if near else " (docs/config.md lists the settings)"
        warnings.append(f"{name[:64]!r} is set but is no setting of saga serve: ignored{hint}")
    return warnings


def _with_preset(data: Mapping[Any, Any]) -> dict[Any, Any]:
    """`data` with a policy written as settings of a preset (`{preset: saga, admission: {...}}`, or without
    `picker`) spelled out whole (proxy/scheduler/registry.py `with_preset`)."""
    data = dict(data)
    policy = data.get("policy")
    if isinstance(policy, Mapping):
        data["policy"] = with_preset(policy)
    return data


def _converted(data: Mapping[str, Any]) -> ProxyConfig:
    data = _with_preset(data)
    try:
        # strict=False: environment values are strings ("8000" -> 8000, "true" -> True).
        return msgspec.convert(data, ProxyConfig, strict=False)
    except msgspec.ValidationError as e:
        raise ConfigError(f"bad configuration: {e}") from e


def build_config(data: Mapping[str, Any]) -> ProxyConfig:
    config = _converted(data)
    config.validate()
    return config


def configured_host(args: argparse.Namespace) -> str | None:
    """The host `saga serve` was to listen on, as the file and environment give it (for an error naming
    it); None if they give none or cannot be read."""
    try:
        host = _layered(args, [], None).get("host")
    except (ConfigError, OSError, ValueError):
        return None
    return host if isinstance(host, str) else None


def layered_time_scale(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> float:
    """`time_scale` as `proxy_config` layers it, for `saga serve --simulate N`: its fleet starts (at this
    speed) before the configuration, which lists the fleet's URLs, can be whole."""
    scale = _converted(_layered(args, [], environ)).time_scale
    if not (math.isfinite(scale) and scale > 0):
        message = f"time_scale must be a finite number > 0, got {scale}"
        raise ConfigError(_said_with_its_variable(message, args, os.environ if environ is None else environ))
    return scale


def proxy_config(
    args: argparse.Namespace, replicas: list[str], environ: Mapping[str, str] | None = None
) -> ProxyConfig:
    """ProxyConfig from defaults < YAML file < SAGA_* environment < command-line flags."""
    environ = os.environ if environ is None else environ
    data = _layered(args, replicas, environ)
    try:
        return build_config(data)
    except ConfigError as e:
        if e.key == "replicas" and replicas:  # the flags' list (or --simulate's) replaced SAGA_REPLICAS
            raise ConfigError(str(e)) from None
        raise ConfigError(_said_with_its_variable(str(e), args, environ, e.key)) from None


def _said_with_its_variable(
    message: str, args: argparse.Namespace, environ: Mapping[str, str], key: str | None = None
) -> str:
    """A refused value's message led by the environment variable it came from, where it came from one and
    no flag replaced it (the checks of range and finiteness run on the merged configuration, where
    `SAGA_WORKERS=1e3` was said without the variable: the nineteenth review). The key is `key`, or else the
    message's first word (`workers must be between 1 and 256, got 1000`)."""
    if key is None:
        leading = re.match(r"[a-z_]+(?:\.[a-z_]+)?", message)
        if leading is None:
            return message
        key = leading.group()
    variable = _source_variable(key, args, environ)
    return f"{variable}: {message}" if variable else message


_FIELD_NAMES = frozenset(f.name for f in msgspec.structs.fields(ProxyConfig))


def _source_variable(key: str, args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    """The variable `key` (`workers`, `kv_events.port`) came from, or None: from the file, a flag or a
    default. `kv_events.port` has a flag and a variable of its own over `SAGA_KV_EVENTS`, the rest of
    `kv_events` only that (a file's `kv_events.max_sessions` was blamed on `SAGA_KV_EVENTS_PORT`: the
    twentieth review)."""
    field, _, part = key.partition(".")
    if field == "kv_events":
        if part == "port":
            if getattr(args, "kv_events_port", None) is not None:
                return None
            if "SAGA_KV_EVENTS_PORT" in environ:
                return "SAGA_KV_EVENTS_PORT"
        return "SAGA_KV_EVENTS" if "SAGA_KV_EVENTS" in environ else None
    if field not in _FIELD_NAMES:
        return None
    variable = f"SAGA_{field.upper()}"
    flagged = field not in _SKIPPED or field == "time_scale"  # (`--time-scale` is layered apart)
    if variable not in environ or (flagged and getattr(args, field, None) is not None):
        return None
    return variable


def _layered(
    args: argparse.Namespace, replicas: list[str], environ: Mapping[str, str] | None
) -> dict[str, Any]:
    names = [f.name for f in msgspec.structs.fields(ProxyConfig) if f.name not in _SKIPPED]
    flags = {name: getattr(args, name, None) for name in names}
    environ = os.environ if environ is None else environ
    data = config_data(args.config, environ, flags)
    port = getattr(args, "kv_events_port", None)
    if port is None and (text := environ.get("SAGA_KV_EVENTS_PORT")) is not None:
        port = _environment_value("SAGA_KV_EVENTS_PORT", text, int)
    if port is not None:
        kv_events = data.get("kv_events")
        data["kv_events"] = {**(kv_events if isinstance(kv_events, dict) else {}), "port": port}
    time_scale = getattr(args, "time_scale", None)  # `saga serve --time-scale K`, flags over the rest
    if time_scale is not None:
        data["time_scale"] = time_scale
    if replicas:
        data["replicas"] = replicas
    data.setdefault("replicas", [])
    return data
