# ruff: noqa
import os
from pathlib import Path
import os, signal, subprocess, sys, time

SNAP = os.environ.get("SAGA_TREE", str(Path(__file__).resolve().parents[4]))


def start(args, log):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy.cli",
            "serve",
            "--replica",
            "http://127.0.0.1:25998",
            "--no-access-log",
            *args,
        ],
        cwd=SNAP,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_listening(p, path, timeout=40):
    t = time.time()
    while time.time() - t < timeout:
        txt = open(path).read()
        if "listening" in txt.lower() or "serving" in txt.lower():
            return "listening"
        if p.poll() is not None:
            return f"exit {p.returncode}"
        time.sleep(0.1)
    return "timeout"


def children(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def killgroup(p, sig=signal.SIGKILL):
    try:
        os.killpg(p.pid, sig)
    except ProcessLookupError:
        pass


def reap(p, extra=()):
    killgroup(p, signal.SIGTERM)
    try:
        p.wait(8)
    except subprocess.TimeoutExpired:
        killgroup(p)
        p.wait()
    for pid in extra:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
