# ruff: noqa
#!/usr/bin/env python3
"""DEFECT check: `saga serve --workers 2` cannot start on a port that a single-process `saga serve` served
a minute ago: connections the stopped proxy closed first sit in TIME_WAIT on the port, and the supervisor's
held socket binds without SO_REUSEADDR, so it fails with "cannot bind ...: Address already in use" (a
one-process proxy, and a --workers proxy after a --workers proxy, start fine). Seen by an operator switching a
running proxy to workers (systemd restart with a changed config). Project tree: $SAGA_TREE (default /tmp/snap47)."""

import contextlib, os, signal, socket, subprocess, sys, tempfile, time, urllib.request

TREE = os.environ.get("SAGA_TREE", "/tmp/snap47")
SIM, PORT = 22120, 22020


def wait_port(port, t=30):
    end = time.time() + t
    while time.time() < end:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return True
        time.sleep(0.1)
    return False


procs = []
log = open(tempfile.mktemp(prefix="d5-", suffix=".log"), "w+")


def spawn(cmd):
    p = subprocess.Popen(cmd, cwd=TREE, stdout=log, stderr=log, start_new_session=True)
    procs.append(p)
    return p


def serve(*extra):
    return spawn(
        [
            sys.executable,
            "-m",
            "proxy",
            "serve",
            "--port",
            str(PORT),
            "--replica",
            f"http://127.0.0.1:{SIM}",
            "--time-scale",
            "20",
            "--no-access-log",
            *extra,
        ]
    )


try:
    spawn([sys.executable, "-m", "proxy", "sim", "--base-port", str(SIM), "--time-scale", "20"])
    wait_port(SIM)
    one = serve("--shutdown-grace-s", "1")
    assert wait_port(PORT)
    for _ in range(5):  # a few calls on keep-alive connections, which the proxy closes as it stops
        with contextlib.suppress(Exception):
            urllib.request.urlopen(f"http://127.0.0.1:{PORT}/v1/models", timeout=5).read()
    c = socket.create_connection(("127.0.0.1", PORT))
    c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    c.recv(4096)
    one.send_signal(signal.SIGTERM)
    one.wait(15)
    c.close()
    tw = subprocess.run(
        f"ss -tanH state time-wait '( sport = :{PORT} )'", shell=True, capture_output=True, text=True
    ).stdout.count("\n")
    two = serve("--workers", "2")
    up = wait_port(PORT, 20)
    log.seek(0)
    text = log.read()
    if not up and "cannot bind" in text:
        line = [l for l in text.splitlines() if "cannot bind" in l][-1]
        print(
            f"DEFECT: --workers 2 refused to start right after a one-process proxy on the port ({tw} server-side TIME_WAIT): {line}"
        )
    elif up:
        print(
            f"OK: --workers 2 started on the port right after a one-process proxy ({tw} TIME_WAIT connections)"
        )
    else:
        print("INCONCLUSIVE: proxy did not start for another reason:\n" + text[-800:])
finally:
    for p in reversed(procs):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
        time.sleep(0.3)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            p.wait(5)
    log.close()
    os.unlink(log.name)
