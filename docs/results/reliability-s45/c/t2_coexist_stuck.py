# ruff: noqa
import os

os.makedirs("/tmp/saga-review45c", exist_ok=True)
# Item 2: proxies on one port, 127.0.0.1 and 127.0.0.2, both run (--workers 2); a stuck port window delays start by <= ~2 s.
import sys, socket

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *

fake = start_fake(27161)
problems = []


def serve(host, port, workers="2"):
    e = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy.cli",
            "serve",
            "--replica",
            "http://127.0.0.1:27161",
            "--host",
            host,
            "--port",
            str(port),
            "--workers",
            workers,
        ],
        cwd=SNAP,
        env=e,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        text=True,
    )


def up(host, port, t=25):
    end = time.time() + t
    t0 = time.time()
    while time.time() < end:
        try:
            socket.create_connection((host, port), 0.3).close()
            return time.time() - t0
        except OSError:
            time.sleep(0.05)


try:
    a = serve("127.0.0.1", 27062)
    ta = up("127.0.0.1", 27062)
    b = serve("127.0.0.2", 27062)
    tb = up("127.0.0.2", 27062)
    if ta is None or tb is None or b.poll() is not None:
        problems.append(
            f"127.0.0.1 and 127.0.0.2 on one port: up {ta} {tb}, second exit {b.poll()} {b.stderr.read() if b.poll() is not None else ''}"
        )
    stop(a)
    stop(b)
    base = serve("127.0.0.1", 27063)
    t_base = up("127.0.0.1", 27063)
    stop(base)
    hold = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    hold.bind("\0saga-serve-port-window 27064")
    s = serve("127.0.0.1", 27064)
    t_stuck = up("127.0.0.1", 27064)
    stop(s)
    hold.close()
    if t_stuck is None or t_stuck - t_base > 3.0:
        problems.append(f"stuck window: up after {t_stuck} s vs {t_base:.2f} s without")
finally:
    fake.terminate()
    fake.wait()
print(
    "DEFECT: " + " | ".join(problems)
    if problems
    else f"OK: 127.0.0.1 and 127.0.0.2 share port 27062; a stuck window delayed a --workers 2 start {t_stuck - t_base:.2f} s (base {t_base:.2f} s)"
)
