"""Child processes a test starts: loopback ports for them, and stopping them (SIGTERM, then SIGKILL if one
does not exit in time)."""

from __future__ import annotations

import socket
import subprocess
import threading
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


LISTENING = "SAGA proxy listening on "


def start_saga_serve(
    cmd: list[str], cwd: Any, env: dict[str, str], start_s: float = 60.0, own_group: bool = False
) -> tuple[subprocess.Popen[str], str, list[str]]:
    """Starts `saga serve` (`cmd`), keeps its output (for failure messages) and waits for its listening line;
    returns the process, its URL and the output list, which keeps growing. `own_group`: in a process group
    of its own (a test signals the whole group, as Ctrl-C does)."""
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=own_group,
    )
    output: list[str] = []
    listening = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if line.startswith(LISTENING):
                listening.set()

    threading.Thread(target=read, daemon=True).start()
    if not listening.wait(start_s):
        stop_process(proc, 10)
        raise AssertionError("".join(output))
    url = next(x for x in output if x.startswith(LISTENING)).split()[4]
    return proc, url, output
