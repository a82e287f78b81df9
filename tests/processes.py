"""Child processes a test starts: loopback ports for them, and stopping them (SIGTERM, then SIGKILL if one
does not exit in time)."""

from __future__ import annotations

import socket
import subprocess
from contextlib import ExitStack
from typing import Any


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports free now. Every socket is held until all are picked: picked one at a
    time, a port can be handed out again once its socket closes, and two children then race to bind it."""
    with ExitStack() as held:
        ports = []
        for _ in range(count):
            s = held.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            ports.append(int(s.getsockname()[1]))
        return ports


def free_port() -> int:
    return free_ports(1)[0]


def stop_process(proc: subprocess.Popen[Any], timeout_s: float) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
