"""SAGA_* variables the project itself reads (plugin, tests) warned about as unknown by saga serve."""

import os
import subprocess
import sys

env = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}
env["PYTHONPATH"] = os.environ.get(
    "SAGA_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
)
env.update(
    {
        "SAGA_RETAIN_MAX_FRACTION": "0.5",
        "SAGA_RETAIN_MAX_TTL_S": "600",
        "SAGA_TINY_MODEL": "/x",
        "SAGA_CONTRACT_VLLM_URL": "http://127.0.0.1:1",
        "SAGA_X\x1b[31mRED": "1",
    }
)
p = subprocess.run(
    [
        sys.executable,
        "-m",
        "proxy.cli",
        "serve",
        "--replica",
        "http://127.0.0.1:25999",
        "--port",
        "25300",
        "--health-timeout-s",
        "0.2",
        "--host",
        "nonexistent.invalid",
    ],
    env=env,
    capture_output=True,
    text=True,
    timeout=30,
    cwd=os.path.dirname(os.path.abspath(__file__)),
)
print(p.stderr.strip())
warned = [
    v
    for v in (
        "SAGA_RETAIN_MAX_FRACTION",
        "SAGA_RETAIN_MAX_TTL_S",
        "SAGA_TINY_MODEL",
        "SAGA_CONTRACT_VLLM_URL",
    )
    if v in p.stderr
]
print("ESC reaches terminal:", "\x1b" in p.stderr)
print(f"DEFECT: false warnings for project variables {warned}" if warned else "OK")
