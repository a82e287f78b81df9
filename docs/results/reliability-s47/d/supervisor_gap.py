# ruff: noqa
"""A supervisor started beside TIME_WAIT connections keeps its SO_REUSEADDR held socket for life; once its
starting lock is let go, a moment with no worker listening (every worker restarting) lets a second
`saga serve --workers 2` probe, hold and start on the same port: two proxies share it (SO_REUSEPORT)."""

import os, tempfile

LOGS = tempfile.mkdtemp(prefix="rev47d-")
import os, sys, socket, subprocess, time, signal

TREE = os.environ.get("SAGA_TREE", "/tmp/snap47d")
PORT = int(os.environ.get("PORT", "26200"))
REPLICA = "http://127.0.0.1:26209"


def time_wait(port):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen()
    for _ in range(3):
        c = socket.create_connection(("127.0.0.1", port))
        a, _ = srv.accept()
        a.close()
        time.sleep(0.05)
        c.close()
    srv.close()
    time.sleep(0.1)
    out = subprocess.run(
        ["ss", "-tanH", "state", "time-wait", f"sport = :{port}"], capture_output=True, text=True
    ).stdout
    return len(out.strip().splitlines())


def start(tag):
    log = open(os.path.join(LOGS, f"sup_{tag}.log"), "w")
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy.cli",
            "serve",
            "--workers",
            "2",
            "--port",
            str(PORT),
            "--replica",
            REPLICA,
            "--health-interval-s",
            "5",
        ],
        cwd=TREE,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return p


def wait_listening(tag, p, timeout=40):
    end = time.time() + timeout
    while time.time() < end:
        txt = open(os.path.join(LOGS, f"sup_{tag}.log")).read()
        if "listening" in txt:
            return True
        if p.poll() is not None:
            return False
        time.sleep(0.1)
    return False


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def stop(p):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    p.wait()


a = b = None
try:
    tw = 0 if os.environ.get("NO_TW") else time_wait(PORT)
    a = start("a")
    ok_a = wait_listening("a", a)
    kids = children(a.pid)
    for k in kids:
        os.kill(k, signal.SIGKILL)  # every worker exits at once (as a shared fault does)
    time.sleep(0.05)
    b = start("b")
    ok_b = wait_listening("b", b)
    time.sleep(2.0)
    b_alive = b.poll() is None
    listeners = subprocess.run(["ss", "-tlnpH", f"sport = :{PORT}"], capture_output=True, text=True).stdout
    pids = set()
    import re

    for m in re.finditer(r"pid=(\d+)", listeners):
        pid = int(m.group(1))
        try:
            pids.add(int(open(f"/proc/{pid}/stat").read().split()[3]))  # parent: the supervisor
        except Exception:
            pass
    print(
        f"time_wait={tw} a_started={ok_a} killed_workers={len(kids)} b_started={ok_b} b_alive={b_alive} supervisors_listening={sorted(pids)} (a={a.pid} b={b.pid})"
    )
    if ok_b and b_alive and {a.pid, b.pid} <= pids:
        print(
            "DEFECT: a second saga serve --workers 2 started on the port the first supervisor holds; both listen (SO_REUSEPORT split)"
        )
    elif tw == 0 and not os.environ.get("NO_TW"):
        print("INCONCLUSIVE: no TIME_WAIT made")
    else:
        print("OK: the second supervisor was refused")
finally:
    for p in (b, a):
        if p is not None:
            stop(p)
