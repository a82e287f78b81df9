"""Under `log_format: json` every line `saga serve` writes is a JSON object: the lines it writes for its user
(its simulated replicas, where it listens) as well as its logs, with one process or with workers. The
Kubernetes Deployment and both compose files set `SAGA_LOG_FORMAT=json`, and a log pipeline reading them
could not parse the two plain lines (the forty-fourth session's review)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.processes import LISTENING, free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("workers", [1, 2])
def test_every_line_is_json_under_log_format_json(workers: int) -> None:
    cmd = [sys.executable, "-m", "proxy.cli", "serve", "--simulate", "1", "--host", "127.0.0.1"]
    cmd += ["--port", str(free_port()), "--workers", str(workers)]
    unknown = "SAGA_" + "BOGUS"  # (spelt apart: test_config_file.py takes each SAGA_ name here as read)
    env = {**os.environ, "SAGA_LOG_FORMAT": "json", unknown: "1"}  # a warning at start: JSON too
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    listening = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if LISTENING in line:
                listening.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert listening.wait(60), "".join(lines)
        time.sleep(0.5)  # what the workers log once listening
    finally:
        stop_process(proc, 15)
        reader.join(10)
    entries = [json.loads(line) for line in lines if line.strip()]  # each line parses, or this fails
    messages = [e["message"] for e in entries]
    assert any(m.startswith(LISTENING) for m in messages), messages
    assert any(m.startswith("1 simulated replicas: http://") for m in messages), messages
    warned = [e for e in entries if f"'{unknown}' is set but is no setting" in e["message"]]
    assert len(warned) == 1 and warned[0]["level"] == "WARNING", entries


def test_the_listening_line_names_what_discovery_resolves() -> None:
    """With DNS discovery alone the line ended in a bare arrow (the forty-fourth session's review)."""
    from proxy.config import DnsDiscovery, ProxyConfig
    from proxy.server import listening_line

    config = ProxyConfig(replicas=[], discovery=DnsDiscovery(name="vllm.saga.svc.cluster.local"))
    line = listening_line("http://127.0.0.1:8080", config)
    assert line.endswith("-> the replicas DNS gives for vllm.saga.svc.cluster.local:8000"), line
    both = ProxyConfig(replicas=["http://a:1"], discovery=DnsDiscovery(name="vllm", port=9000))
    assert listening_line("u", both).endswith("-> http://a:1, the replicas DNS gives for vllm:9000")
