# ruff: noqa
"""Shared helpers for the /tmp/rev47a reproduction scripts: start a simulated replica (and optionally a
SAGA proxy in front of it) from the /tmp/snap47 snapshot on loopback ports 21000-21999, send JSON, stop all."""

import contextlib, http.client, json, os, signal, socket, subprocess, sys, time

SNAP = os.environ.get("SAGA_TREE", "/tmp/snap47")
MODEL = "/work/main/.cache/tiny-llama"  # the name the real vLLM serves in tests/real_vllm
ENV = {**os.environ, "SAGA_TREE": SNAP, "PYTHONPATH": SNAP}


def free_port(lo: int) -> int:
    for p in range(lo, 22000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
                return p
            except OSError:
                continue
    raise RuntimeError("no free port")


def wait_ok(port: int, path: str = "/health", timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            c.close()
            if r.status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"port {port} not healthy")


def _stop(p: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


@contextlib.contextmanager
def sim(port_lo: int = 21200, profile: str = "tiny-cpu", extra=()):
    port = free_port(port_lo)
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy",
            "sim",
            "--base-port",
            str(port),
            "--profile",
            profile,
            "--time-scale",
            "100",
            "--model",
            MODEL,
            *extra,
        ],
        cwd=SNAP,
        env=ENV,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ok(port)
        yield port
    finally:
        _stop(p)


@contextlib.contextmanager
def proxy(replica_port: int, port_lo: int = 21300, extra=()):
    port = free_port(port_lo)
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy",
            "serve",
            "--replica",
            f"http://127.0.0.1:{replica_port}",
            "--port",
            str(port),
            "--no-access-log",
            *extra,
        ],
        cwd=SNAP,
        env=ENV,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ok(port, "/health")
        yield port
    finally:
        _stop(p)


def post(port: int, path: str, body, timeout: float = 60.0):
    """(status, parsed JSON or None, raw bytes)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    c.request("POST", path, body=data, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    raw = r.read()
    c.close()
    try:
        j = json.loads(raw)
    except ValueError:
        j = None
    return r.status, j, raw


def report(problems: list[str], ok_text: str) -> None:
    if problems:
        for p in problems:
            print("DEFECT:", p)
    else:
        print("OK:", ok_text)
