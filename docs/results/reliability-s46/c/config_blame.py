# ruff: noqa
"""Item 4: which source a refused value is blamed on (flag / YAML / env), through the CLI's own parser and the
functions `saga serve` calls (proxy_config; layered_time_scale for --simulate), plus real CLI runs."""

import os, sys, subprocess, tempfile, contextlib, io

TREE = os.environ.get("SAGA_TREE", "/tmp/snap46d")
sys.path.insert(0, TREE)
os.chdir(TREE)
from proxy.cli import build_parser
from proxy.serve_options import proxy_config, layered_time_scale
from proxy.scheduler.plugin_spec import ConfigError


def yaml(text):
    f = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    f.write(text)
    f.close()
    return f.name


def outcome(argv, env, simulate=False):
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            args = build_parser().parse_args(["serve", *argv])
    except SystemExit:
        return "argparse refused"
    try:
        if simulate:
            layered_time_scale(args, env)
            proxy_config(args, [*args.replica, "http://127.0.0.1:29999"], env)
        else:
            proxy_config(args, args.replica, env)
    except ConfigError as e:
        return str(e)
    return "accepted"


R = ["--replica", "http://127.0.0.1:29990"]
CASES = [  # (name, argv, env, simulate, expected prefix or "accepted"; None prefix check = must not name a SAGA_ var)
    ("policy env", R, {"SAGA_POLICY": "nosuch"}, False, "SAGA_POLICY: unknown policy 'nosuch'"),
    (
        "policy flag over env",
        R + ["--policy", "nosuch"],
        {"SAGA_POLICY": "saga"},
        False,
        "unknown policy 'nosuch'",
    ),
    ("policy flag valid, env bad", R + ["--policy", "saga"], {"SAGA_POLICY": "nosuch"}, False, "accepted"),
    ("policy yaml", R + ["--config", yaml("policy: nosuch\n")], {}, False, "unknown policy 'nosuch'"),
    (
        "policy yaml bad, env bad",
        R + ["--config", yaml("policy: nosuch\n")],
        {"SAGA_POLICY": "nosuch2"},
        False,
        "SAGA_POLICY: unknown policy 'nosuch2'",
    ),
    (
        "policy yaml ok, env bad",
        R + ["--config", yaml("policy: saga\n")],
        {"SAGA_POLICY": "nosuch2"},
        False,
        "SAGA_POLICY: unknown policy 'nosuch2'",
    ),
    (
        "policy yaml bad, flag bad, env ok",
        R + ["--config", yaml("policy: nosuch\n"), "--policy", "nope"],
        {"SAGA_POLICY": "saga"},
        False,
        "unknown policy 'nope'",
    ),
    ("policy env, simulate", [], {"SAGA_POLICY": "nosuch"}, True, "SAGA_POLICY: unknown policy"),
    ("time_scale env, simulate", [], {"SAGA_TIME_SCALE": "0"}, True, "SAGA_TIME_SCALE: time_scale must"),
    ("time_scale env -1, simulate", [], {"SAGA_TIME_SCALE": "-1"}, True, "SAGA_TIME_SCALE: time_scale must"),
    ("time_scale env nan, simulate", [], {"SAGA_TIME_SCALE": "nan"}, True, "SAGA_TIME_SCALE"),
    ("time_scale env abc, simulate", [], {"SAGA_TIME_SCALE": "abc"}, True, "SAGA_TIME_SCALE"),
    (
        "time_scale flag over env, simulate",
        ["--time-scale", "inf"],
        {"SAGA_TIME_SCALE": "1"},
        True,
        "argparse refused",
    ),
    (
        "time_scale flag ok, env bad, simulate",
        ["--time-scale", "2"],
        {"SAGA_TIME_SCALE": "0"},
        True,
        "accepted",
    ),
    ("time_scale yaml, simulate", ["--config", yaml("time_scale: 0\n")], {}, True, "time_scale must"),
    (
        "time_scale yaml bad env ok, simulate",
        ["--config", yaml("time_scale: 0\n")],
        {"SAGA_TIME_SCALE": "2"},
        True,
        "accepted",
    ),
    (
        "time_scale yaml ok env bad, simulate",
        ["--config", yaml("time_scale: 2\n")],
        {"SAGA_TIME_SCALE": "0"},
        True,
        "SAGA_TIME_SCALE: time_scale must",
    ),
    ("time_scale env, no simulate", R, {"SAGA_TIME_SCALE": "0"}, False, "SAGA_TIME_SCALE: time_scale must"),
    (
        "time_scale flag over env, no simulate",
        R + ["--time-scale", "inf"],
        {"SAGA_TIME_SCALE": "1"},
        False,
        "argparse refused",
    ),
    ("workers env", R, {"SAGA_WORKERS": "1000"}, False, "SAGA_WORKERS: workers must"),
    ("workers flag over env", R + ["--workers", "1000"], {"SAGA_WORKERS": "2"}, False, "workers must"),
    ("port env", R, {"SAGA_PORT": "abc"}, False, "SAGA_PORT"),
    ("replicas env bad", [], {"SAGA_REPLICAS": "ftp://x"}, False, "SAGA_REPLICAS: replica 'ftp://x'"),
    ("replicas yaml bad", ["--config", yaml("replicas: ['ftp://x']\n")], {}, False, "replica 'ftp://x'"),
    (
        "replica flag bad, env set (flag wins)",
        ["--replica", "ftp://x"],
        {"SAGA_REPLICAS": "http://127.0.0.1:29990"},
        False,
        "replica 'ftp://x'",
    ),
    (
        "replica flag twice, env set (flag wins)",
        ["--replica", "http://127.0.0.1:29991", "--replica", "http://127.0.0.1:29991"],
        {"SAGA_REPLICAS": "http://127.0.0.1:29990"},
        False,
        "a replica URL is listed twice",
    ),
    (
        "simulate + replica flag bad, env set",
        ["--replica", "ftp://x"],
        {"SAGA_REPLICAS": "http://127.0.0.1:29990"},
        True,
        "replica 'ftp://x'",
    ),
]
for name, argv, env, sim, want in CASES:
    got = outcome(argv, env, sim)
    ok = got == "accepted" if want == "accepted" else got.startswith(want)
    print(("OK" if ok else "DEFECT") + f": {name}: {got[:110]!r} (want {want[:60]!r})")
# the real CLI, end to end (fails before binding anything)
env = {**os.environ, "SAGA_REPLICAS": "http://127.0.0.1:29990"}
p = subprocess.run(
    ["timeout", "15", sys.executable, "-m", "proxy.cli", "serve", "--replica", "ftp://x", "--port", "29601"],
    env=env,
    capture_output=True,
    text=True,
)
line = (p.stderr.strip().splitlines() or [""])[-1]
print(
    ("DEFECT" if "SAGA_REPLICAS" in line else "OK")
    + f": CLI `SAGA_REPLICAS=<ok> saga serve --replica ftp://x` says {line[:140]!r}"
)
