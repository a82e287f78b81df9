"""A real vLLM (CPU build) for differential tests: where `make real-vllm` put it, and a server fixture helper.

Contract: `require_real_vllm()` returns the venv's python and the tiny model's directory, or skips the test
with the make target to run (fails instead when SAGA_REQUIRE_REAL_VLLM=1, as `make test` sets, so CI never
skips silently). `running_vllm(...)` starts `python -m vllm.entrypoints.openai.api_server` on a free
loopback port in its own process group, waits (bounded) for `/health`, yields its base URL and always kills
the group; the server's output goes to a log file whose tail is shown if it fails to start.
Paths: SAGA_VLLM_VENV (default `.venv-vllm`) and SAGA_TINY_MODEL (default `.cache/tiny-llama`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pytest

from proxy.config import KvEventsConfig, ProxyConfig

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("SAGA_VLLM_VENV", ROOT / ".venv-vllm"))
TINY_MODEL = Path(os.environ.get("SAGA_TINY_MODEL", ROOT / ".cache" / "tiny-llama"))
LOG_DIR = ROOT / ".cache" / "real-vllm"
START_TIMEOUT_S = 240.0  # ~20 s on an idle 2-core machine; CI shares its cores with the other tests

# The flags and environment that start vLLM's CPU build in seconds.
SERVER_FLAGS = (
    "--dtype", "float32", "--enforce-eager", "--distributed-executor-backend", "uni",
    "--max-model-len", "2048", "--enable-prefix-caching", "--enable-prompt-tokens-details",
)  # fmt: skip
SERVER_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "HF_HUB_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "VLLM_SERVER_DEV_MODE": "1",  # for POST /reset_prefix_cache
}


def require_real_vllm() -> tuple[Path, Path]:
    """(the venv's python, the tiny model dir), or skip/fail saying how to build them."""
    python = VENV / "bin" / "python"
    missing = [str(p) for p in (python, TINY_MODEL / "config.json") if not p.exists()]
    if missing:
        reason = f"real vLLM not built ({', '.join(missing)} missing): run `make real-vllm` (make test does)"
        if os.environ.get("SAGA_REQUIRE_REAL_VLLM") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return python, TINY_MODEL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, lines: int = 40) -> str:
    return f"{path}:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Server(NamedTuple):
    """One server of `running_vllms`: its extra flags, extra environment and log name."""

    args: Sequence[str] = ()
    env: Mapping[str, str] | None = None
    name: str = "server"


@contextmanager
def running_vllm(
    extra_args: Sequence[str] = (), extra_env: Mapping[str, str] | None = None, name: str = "server"
) -> Iterator[str]:
    """A real vLLM OpenAI server on the tiny model; yields its base URL. `extra_env` is added to its
    environment; `name` names its log file (two servers at once need two names)."""
    with running_vllms(Server(extra_args, extra_env, name)) as (url,):
        yield url


@contextmanager
def running_vllms(*servers: Server) -> Iterator[tuple[str, ...]]:
    """Several real vLLM servers, started at once (a start is ~40 s of one core's work, so on two cores two
    start in about the time of one); yields their base URLs in order, once every one is healthy."""
    python, model = require_real_vllm()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    started: list[tuple[subprocess.Popen[bytes], str, Path]] = []
    try:
        for server in servers:
            port = _free_port()
            url = f"http://127.0.0.1:{port}"
            log_path = LOG_DIR / f"{server.name}.log"  # the latest run's, for debugging
            argv = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model)]
            argv += [*SERVER_FLAGS, "--host", "127.0.0.1", "--port", str(port), *server.args]
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **SERVER_ENV, **(server.env or {})},
                    start_new_session=True,  # its own process group: the engine child dies with it
                )
            started.append((proc, url, log_path))
        deadline = time.monotonic() + START_TIMEOUT_S
        waiting = list(started)
        while waiting:
            for proc, url, log_path in list(waiting):
                if _healthy(url):
                    waiting.remove((proc, url, log_path))
                elif proc.poll() is not None:
                    pytest.fail(f"vLLM exited ({proc.returncode}) while starting; {_tail(log_path)}")
                elif time.monotonic() > deadline:
                    pytest.fail(f"vLLM not healthy in {START_TIMEOUT_S:.0f} s; {_tail(log_path)}")
            if waiting:
                time.sleep(0.5)
        yield tuple(url for _, url, _ in started)
    finally:
        for proc, _, _ in started:
            _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait_s in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    if proc.poll() is None:
        proc.wait()
    with contextlib.suppress(ProcessLookupError):  # stragglers of the group (the engine process)
        os.killpg(proc.pid, signal.SIGKILL)


def subscribing_proxy(replica: str) -> ProxyConfig:
    """A proxy in front of `replica` that finds its KV-event publishers by asking it (no port given)."""
    return ProxyConfig(
        replicas=[replica],
        port=0,
        health_interval_s=0.2,
        access_log=False,
        policy="session-affinity",
        kv_events=KvEventsConfig(port=None),
    )
