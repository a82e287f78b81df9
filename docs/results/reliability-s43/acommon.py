# ruff: noqa
"""What the a_* scripts share: the tree they run against, a loopback HTTP call, and the fake replica (the
script itself, run with `fake`) behind a proxy for the length of a `with` block."""

import contextlib, http.client, os, socket, subprocess, sys, time

ROOT = os.environ.get(
    "SAGA_ROOT", os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
)


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port}")


def call(port, method, path, body=None, headers=None):
    """(status, body) of one request on loopback; `headers` beside a JSON Content-Type."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
    r = c.getresponse()
    d = r.read()
    c.close()
    return r.status, d


@contextlib.contextmanager
def behind_proxy(script, replica_port, proxy_port, health_headers=None):
    """`script fake` on `replica_port` and `saga serve` in front of it on `proxy_port`, until the proxy's
    /health says the replica is up; both stopped when the block ends."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    procs = [subprocess.Popen([sys.executable, script, "fake"], env=env, stderr=subprocess.DEVNULL)]
    try:
        wait_port(replica_port)
        serve = [sys.executable, "-m", "proxy.cli", "serve", "--replica", f"http://127.0.0.1:{replica_port}"]
        serve += ["--port", str(proxy_port), "--health-interval-s", "0.5"]
        procs.append(
            subprocess.Popen(serve, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
        wait_port(proxy_port)
        for _ in range(100):
            if call(proxy_port, "GET", "/health", headers=health_headers)[0] == 200:
                break
            time.sleep(0.2)
        yield
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(5)
            except Exception:
                p.kill()
