# ruff: noqa
import os

os.makedirs("/tmp/saga-review45c", exist_ok=True)
import os, subprocess, sys, time, socket, json, signal, http.client

SNAP = os.environ.get(
    "SAGA_TREE", os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../.."))
)
HERE = "/tmp/saga-review45c"


def wait_port(port, t=20):
    end = time.time() + t
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False


def start_fake(port):
    p = subprocess.Popen(
        [
            sys.executable,
            os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_replica.py"),
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(f"{HERE}/fake{port}.log", "w"),
    )
    assert wait_port(port)
    return p


def start_saga(port, replica_port, extra=(), env=None, log=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}
    e.update(env or {})
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy.cli",
            "serve",
            "--replica",
            f"http://127.0.0.1:{replica_port}",
            "--port",
            str(port),
            *extra,
        ],
        cwd=SNAP,
        env=e,
        stdout=subprocess.DEVNULL,
        stderr=open(log or f"{HERE}/saga{port}.log", "w"),
        start_new_session=True,
    )
    assert wait_port(port)
    time.sleep(3.0)  # workers up, replica healthy
    return p


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(x) for x in out]


def stop(p):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(8)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def req(port, method, path, body=None, headers=None, timeout=15):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = {"Content-Type": "application/json", **(headers or {})}
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    r = c.getresponse()
    data = r.read()
    hs = r.getheaders()
    c.close()
    return r.status, hs, data


def relayed(headers):
    names = [k.lower() for k, _ in headers]
    return (
        "x-saga-replica" in names and "date" in names and names.index("x-saga-replica") < names.index("date")
    )


def fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


import re as _re


def server_pid(proxy_port, client_port):
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{proxy_port} and dport = :{client_port} )"],
        capture_output=True,
        text=True,
    ).stdout
    m = _re.search(r"pid=(\d+)", out)
    return int(m.group(1)) if m else None


def req_pid(port, method, path, body=None, headers=None, timeout=15):
    """(status, headers, body, pid of the worker that took the connection)"""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.connect()
    pid = server_pid(port, c.sock.getsockname()[1])
    h = {"Content-Type": "application/json", **(headers or {})}
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    r = c.getresponse()
    data = r.read()
    hs = r.getheaders()
    c.close()
    return r.status, hs, data, pid


def start_saga_multi(port, replica_ports, extra=(), env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}
    e.update(env or {})
    args = []
    for rp in replica_ports:
        args += ["--replica", f"http://127.0.0.1:{rp}"]
    p = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "serve", *args, "--port", str(port), *extra],
        cwd=SNAP,
        env=e,
        stdout=subprocess.DEVNULL,
        stderr=open(f"{HERE}/saga{port}.log", "w"),
        start_new_session=True,
    )
    assert wait_port(port)
    time.sleep(3.0)
    return p


def hget(hs, name):
    for k, v in hs:
        if k.lower() == name.lower():
            return v


def sse_final(data):
    """the response of a Responses stream's response.completed event, else None"""
    for line in data.split(b"\n"):
        if line.startswith(b"data:") and b"response.completed" in line:
            return json.loads(line[5:])["response"]
