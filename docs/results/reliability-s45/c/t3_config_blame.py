# ruff: noqa
import os

os.makedirs("/tmp/saga-review45c", exist_ok=True)
# Item 3: does the error message lead with the variable the bad value really came from?
import os, subprocess, sys, tempfile

SNAP = os.environ.get(
    "SAGA_TREE", os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../.."))
)


def run(env_extra, args, file_text=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}
    env.update(env_extra)
    cmd = [
        sys.executable,
        "-m",
        "proxy.cli",
        "serve",
        "--replica",
        "http://127.0.0.1:27999",
        "--port",
        "27001",
    ] + args
    if file_text is not None:
        f = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False, dir="/tmp/saga-review45c")
        f.write(file_text)
        f.close()
        cmd += ["--config", f.name]
    p = subprocess.run(cmd, cwd=SNAP, env=env, capture_output=True, text=True, timeout=20)
    return p.returncode, (p.stderr.strip().splitlines() or [""])[-1]


cases = [
    # (desc, env, args, file, variable that must NOT lead, variable/flag that is to blame)
    (
        "file kv_events.max_sessions: 0 with valid SAGA_KV_EVENTS_PORT",
        {"SAGA_KV_EVENTS_PORT": "27555"},
        [],
        "kv_events:\n  max_sessions: 0\n",
        "SAGA_KV_EVENTS_PORT",
    ),
    (
        "SAGA_KV_EVENTS_PORT=70000 with valid SAGA_KV_EVENTS",
        {"SAGA_KV_EVENTS": '{"max_sessions": 5}', "SAGA_KV_EVENTS_PORT": "70000"},
        [],
        None,
        "SAGA_KV_EVENTS:",
    ),
    (
        "--kv-events-port 70000 flag with valid SAGA_KV_EVENTS",
        {"SAGA_KV_EVENTS": '{"max_sessions": 5}'},
        ["--kv-events-port", "70000"],
        None,
        "SAGA_KV_EVENTS:",
    ),
]
bad = []
for desc, env, args, ft, wrong in cases:
    rc, line = run(env, args, ft)
    if line.find(wrong) >= 0 and "Traceback" not in line:
        bad.append(f"[{desc}] rc={rc} said {line!r}")
    elif "Traceback" in line:
        bad.append(f"[{desc}] traceback: {line!r}")
if bad:
    print("DEFECT: error blames the wrong variable: " + " | ".join(bad))
else:
    print("OK: kv_events errors blame the right source in %d cases" % len(cases))
