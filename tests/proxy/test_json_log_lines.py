"""Under `log_format: json` every line `saga serve` writes is a JSON object: the lines it writes for its user
(its simulated replicas, where it listens) as well as its logs, with one process or with workers. The
Kubernetes Deployment and both compose files set `SAGA_LOG_FORMAT=json`, and a log pipeline reading them
could not parse the two plain lines (the forty-fourth session's review)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import LISTENING, free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def json_logged_serve(*args: str, environ: dict[str, str] | None = None) -> Iterator[list[str]]:
    """`saga serve ARGS` under `SAGA_LOG_FORMAT=json` while the context is open, once it listens; yields the
    lines it writes (stdout and stderr), complete once the context has closed (the process stopped)."""
    cmd = [sys.executable, "-m", "proxy.cli", "serve", "--host", "127.0.0.1", *args]
    env = {**os.environ, "SAGA_LOG_FORMAT": "json", **(environ or {})}
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
        yield lines
    finally:
        stop_process(proc, 15)
        reader.join(10)


@pytest.mark.parametrize("workers", [1, 2])
def test_every_line_is_json_under_log_format_json(workers: int) -> None:
    unknown = "SAGA_" + "BOGUS"  # (spelt apart: test_config_file.py takes each SAGA_ name here as read)
    args = ("--simulate", "1", "--port", str(free_port()), "--workers", str(workers))
    with json_logged_serve(*args, environ={unknown: "1"}) as lines:  # a warning at start: JSON too
        time.sleep(0.5)  # what the workers log once listening
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


@pytest.mark.parametrize("server", ["fast", "aiohttp"])
def test_json_access_lines_name_the_session_and_replica_of_the_call(server: str) -> None:
    """A JSON access line carried no ids: correlating it with a call's session or replica meant matching
    times against the proxy's other lines. It now has the `session_id` and `replica_id` the call's answer
    named (`X-Session-ID`, `X-Saga-Replica`), streamed or not; a refused call has neither."""
    port = free_port()
    answered: dict[str, tuple[str, str]] = {}  # session -> (its X-Session-ID, its X-Saga-Replica)
    args = ("--simulate", "2", "--port", str(port), "--time-scale", "50", "--server", server)
    with json_logged_serve(*args) as lines:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        for session, stream in (("log-whole", False), ("log-stream", True)):
            body = {"model": "saga-sim", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
            request = urllib.request.Request(
                url,
                json.dumps({**body, "stream": stream}).encode(),
                {"Content-Type": "application/json", "X-Session-ID": session},
            )
            with urllib.request.urlopen(request, timeout=30) as r:
                r.read()
                answered[session] = (r.headers["X-Session-ID"], r.headers["X-Saga-Replica"])
        refused = urllib.request.Request(url, b"{", {"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(refused, timeout=30)
        assert e.value.code == 400
        time.sleep(1.0)  # the access log is written in batches, a few times a second
    access = [e for e in map(json.loads, filter(str.strip, lines)) if e["logger"] == "saga.access"]
    calls = [e for e in access if '"POST /v1/chat/completions' in e["message"]]
    assert len(calls) == 3, access
    shown = [(e.get("session_id"), e.get("replica_id")) for e in calls]
    assert shown[:2] == [answered["log-whole"], answered["log-stream"]], shown
    assert all(replica.startswith("http://127.0.0.1:") for _, replica in shown[:2]), shown
    assert shown[2] == (None, None) and " 400 " in calls[2]["message"], calls[2]


@pytest.mark.parametrize("server", ["fast", "aiohttp"])
async def test_a_replicas_own_session_header_on_its_error_answer_is_not_passed_on_nor_logged(
    server: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The review of the change: a replica's 400 carrying `x-session-id` of its own was relayed beside the
    proxy's `X-Session-ID` (the client got two), and under `server: aiohttp` the access line logged the
    replica's (aiohttp reads the first)."""
    import aiohttp

    from proxy.server import running_proxy
    from tests.proxy.fakes import config, raw_replica

    async def refuse(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        if not head.startswith(b"POST"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            return
        error = b'{"error":{"message":"bad","type":"BadRequestError","code":400}}'
        writer.write(
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nx-session-id: forged\r\n"
            + b"Content-Length: %d\r\n\r\n%s" % (len(error), error)
        )

    caplog.set_level(logging.INFO, logger="saga.access")
    body = {"model": "saga-sim", "messages": [{"role": "user", "content": "hi"}]}
    async with raw_replica(refuse) as replica, running_proxy(config([replica], server=server)) as url:
        async with aiohttp.ClientSession() as http:
            headers = {"X-Session-ID": "mine"}
            async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
                assert r.status == 400
                shown = r.headers.getall("X-Session-ID")
        await asyncio.sleep(0.3)  # (aiohttp logs after the answer is written)
    assert shown == ["mine"], shown
    (line,) = [rec for rec in caplog.records if rec.name == "saga.access" and " 400 " in rec.getMessage()]
    assert (getattr(line, "session_id", None), getattr(line, "replica_id", None)) == ("mine", replica)
