# ruff: noqa
# ruff: noqa
"""Item 4: a bad replica list is blamed on where it came from (flag / --simulate / YAML `replicas:` /
SAGA_REPLICAS), with DNS discovery in the YAML or SAGA_DISCOVERY too; through the CLI's parser and
proxy_config, and two real `saga serve` runs."""

import contextlib, io, os, subprocess, sys, tempfile

TREE = os.environ.get("SAGA_TREE", "/tmp/snap46e")
sys.path.insert(0, TREE)
os.chdir(TREE)
from proxy.cli import build_parser
from proxy.serve_options import proxy_config
from proxy.scheduler.plugin_spec import ConfigError


def yaml(text):
    f = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False, dir="/tmp")
    f.write(text)
    f.close()
    return f.name


def outcome(argv, env, fleet=()):
    with contextlib.redirect_stderr(io.StringIO()):
        args = build_parser().parse_args(["serve", *argv])
    try:
        proxy_config(args, [*args.replica, *fleet], env)
    except ConfigError as e:
        return str(e)
    return "accepted"


BAD, OK1 = "ftp://x", "http://127.0.0.1:30990"
DNS = "discovery:\n  name: vllm.default.svc.cluster.local\n"
DNSJ = '{"name": "vllm.local"}'
CASES = [
    ("yaml replicas bad, no env", ["--config", yaml(f"replicas: ['{BAD}']\n")], {}, (), "replica 'ftp://x'"),
    (
        "yaml replicas ok, env bad",
        ["--config", yaml(f"replicas: ['{OK1}']\n")],
        {"SAGA_REPLICAS": BAD},
        (),
        "SAGA_REPLICAS: replica 'ftp://x'",
    ),
    (
        "yaml replicas bad, env ok",
        ["--config", yaml(f"replicas: ['{BAD}']\n")],
        {"SAGA_REPLICAS": OK1},
        (),
        "accepted",
    ),
    (
        "yaml replicas bad, flag ok, env set",
        ["--config", yaml(f"replicas: ['{BAD}']\n"), "--replica", OK1],
        {"SAGA_REPLICAS": OK1},
        (),
        "accepted",
    ),
    (
        "yaml replicas ok, flag bad, env ok",
        ["--config", yaml(f"replicas: ['{OK1}']\n"), "--replica", BAD],
        {"SAGA_REPLICAS": OK1},
        (),
        "replica 'ftp://x'",
    ),
    (
        "yaml twice, no env",
        ["--config", yaml(f"replicas: ['{OK1}', '{OK1}']\n")],
        {},
        (),
        "a replica URL is listed twice",
    ),
    (
        "yaml discovery, env replicas bad",
        ["--config", yaml(DNS)],
        {"SAGA_REPLICAS": BAD},
        (),
        "SAGA_REPLICAS: replica 'ftp://x'",
    ),
    (
        "yaml discovery, flag bad, env ok",
        ["--config", yaml(DNS), "--replica", BAD],
        {"SAGA_REPLICAS": OK1},
        (),
        "replica 'ftp://x'",
    ),
    (
        "yaml discovery + replicas bad, env ok",
        ["--config", yaml(DNS + f"replicas: ['{BAD}']\n")],
        {"SAGA_REPLICAS": OK1},
        (),
        "accepted",
    ),
    (
        "env discovery, flag bad, env replicas ok",
        ["--replica", BAD],
        {"SAGA_DISCOVERY": DNSJ, "SAGA_REPLICAS": OK1},
        (),
        "replica 'ftp://x'",
    ),
    (
        "env discovery, env replicas bad",
        [],
        {"SAGA_DISCOVERY": DNSJ, "SAGA_REPLICAS": BAD},
        (),
        "SAGA_REPLICAS: replica 'ftp://x'",
    ),
    (
        "env discovery bad scheme, flag ok",
        ["--replica", OK1],
        {"SAGA_DISCOVERY": '{"name":"a.b","scheme":"ftp"}', "SAGA_REPLICAS": BAD},
        (),
        "SAGA_DISCOVERY: discovery.scheme",
    ),
    (
        "yaml discovery bad scheme, env discovery unset",
        ["--config", yaml("discovery:\n  name: a.b\n  scheme: ftp\n")],
        {"SAGA_REPLICAS": OK1},
        (),
        "discovery.scheme",
    ),
    (
        "simulate fleet + flag bad, env bad",
        ["--simulate", "1", "--replica", BAD],
        {"SAGA_REPLICAS": BAD},
        ("http://127.0.0.1:30991",),
        "replica 'ftp://x'",
    ),
    (
        "simulate fleet + flag = fleet url twice, env ok",
        ["--simulate", "1", "--replica", "http://127.0.0.1:30991"],
        {"SAGA_REPLICAS": OK1},
        ("http://127.0.0.1:30991",),
        "a replica URL is listed twice",
    ),
    (
        "simulate fleet, env bad (replaced)",
        ["--simulate", "1"],
        {"SAGA_REPLICAS": BAD},
        ("http://127.0.0.1:30991",),
        "accepted",
    ),
    ("empty SAGA_REPLICAS, flag ok", ["--replica", OK1], {"SAGA_REPLICAS": ""}, (), "accepted"),
    ("empty SAGA_REPLICAS alone", [], {"SAGA_REPLICAS": ""}, (), "SAGA_REPLICAS: replica ''"),
]
for name, argv, env, fleet, want in CASES:
    got = outcome(argv, env, fleet)
    ok = got == want if want == "accepted" else got.startswith(want)
    print(("OK" if ok else "DEFECT") + f": {name}: {got[:110]!r} (want {want!r})")

# real CLI runs (they fail at configuration, before listening)
y = yaml(DNS)
for env, argv, want, notwant in (
    (
        {"SAGA_REPLICAS": OK1},
        ["--config", y, "--replica", BAD, "--port", "30993"],
        "replica 'ftp://x'",
        "SAGA_REPLICAS",
    ),
    ({"SAGA_REPLICAS": BAD}, ["--config", y, "--port", "30993"], "SAGA_REPLICAS: replica 'ftp://x'", None),
):
    p = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "serve", *argv],
        cwd=TREE,
        capture_output=True,
        text=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}, "PYTHONPATH": TREE, **env},
        timeout=30,
    )
    err = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""
    ok = p.returncode != 0 and want in err and (notwant is None or notwant not in err)
    print(("OK" if ok else "DEFECT") + f": CLI {env} {' '.join(argv[:4])}: rc {p.returncode}, {err[:120]!r}")
