"""`saga serve --workers N`: N worker processes serving one port, started, watched and stopped by this one.

One event-loop thread bounds a single proxy (docs/results/overhead.md), so with `workers > 1` `saga serve`
becomes a supervisor: it makes a private directory (mode 0700) for the workers' sockets, binds the port with
SO_REUSEPORT (port 0 picks one; the socket stays bound, not listening, so no other program takes the port
while workers come and go), and runs the same `saga serve` command N times with `SAGA_WORKER_INDEX/COUNT/DIR`
set (proxy/worker_set.py). Each worker listens on the port with SO_REUSEPORT and hands a client connection
to the worker that owns its call's session (proxy/fast_server.py, proxy/connection_handoff.py).

Contract:
- The usual "SAGA proxy listening on ..." line is printed once, when every worker is ready (its ready file).
- A worker that exits is restarted after a bounded backoff; `max_exits(N)` exits within `EXIT_WINDOW_S`, or
  a worker that exits before the first start-up completes, stop everything: exit code 1 with a message.
- Every worker, and every restart of one, runs the configuration the supervisor validated at its start
  (`config.json` in the directory, `worker_config`): not the file, environment and flags read again, which an
  operator may have edited since (one worker on a new admin token, the other on the old one) or left half
  written (each restart failing until the supervisor stopped the healthy workers too).
- SIGTERM, SIGINT or SIGHUP stop the workers (SIGTERM: each drains its calls for `shutdown_grace_s`; SIGKILL
  after that and `STOP_GRACE_S` more, or at once on a second signal), and the directory is removed. A
  worker leaves its own second signal to the supervisor: a signal to the process group reaches each worker
  before the supervisor's SIGTERM does.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator

import msgspec

from proxy.config import ProxyConfig
from proxy.logs import announce, use_json_logs
from proxy.server import STOP_SIGNALS, all_exist, base_url, listening_line, ready_file
from proxy.worker_set import COUNT_VAR, DIRECTORY_VAR, INDEX_VAR, write_private, write_tenant_key

log = logging.getLogger("saga.proxy")
MAX_EXITS, EXIT_WINDOW_S = 5, 30.0
RESTART_DELAY_S, MAX_RESTART_DELAY_S = 0.1, 5.0
STOP_GRACE_S = 10.0
READY_POLL_S = 0.05
WORKER_CONFIG = "config.json"


def write_worker_config(directory: str, config: ProxyConfig) -> None:
    """`config` for the workers of the supervisor whose private `directory` this is (readable by its owner
    alone: it holds the admin token and API keys)."""
    write_private(os.path.join(directory, WORKER_CONFIG), msgspec.json.encode(config))


def worker_config(directory: str) -> ProxyConfig | None:
    """The configuration the supervisor wrote for its workers (`write_worker_config`), or None where it wrote
    none."""
    try:
        with open(os.path.join(directory, WORKER_CONFIG), "rb") as f:
            return msgspec.json.decode(f.read(), type=ProxyConfig)
    except FileNotFoundError:
        return None


def max_exits(workers: int) -> int:
    """Exits within `EXIT_WINDOW_S` that stop the proxy: one fault of what the workers share (`load.table`
    truncated: every worker's SIGBUS) kills each worker once, and is survived whatever their number."""
    return max(MAX_EXITS, 2 * workers)


def hold_port(host: str, port: int) -> socket.socket:
    """A socket bound (not listening) to the port with SO_REUSEPORT alone: learns port 0's pick and keeps it.
    A port something listens on, or another supervisor holds so, is refused first (EADDRINUSE), whether or
    not its sockets have SO_REUSEPORT: another `saga serve --workers` on the port joined it, and the kernel
    spread the clients' connections over both proxies, one session's calls to two different replica sets
    (the forty-fourth session's review). The probe has SO_REUSEADDR alone, so an earlier run's connections
    left in TIME_WAIT do not count; the held socket has no SO_REUSEADDR, so a probe beside it fails while
    its workers start (with it, a second supervisor started within that second bound beside the first's).
    Probe and hold are two steps, so two supervisors started at the same instant could both pass the probe
    and hold the port together (1 of 20 tries, the eighteenth review; spelt 127.0.0.1 and 0.0.0.0, 10-15 of
    150-300, the nineteenth): on Linux probe and hold are one step per port (`_bind_window`), and once held
    the held socket itself refuses every later probe, whatever its spelling. Where an earlier proxy's
    closed connections still sit in TIME_WAIT on the port, the held socket needs SO_REUSEADDR too (without
    it a `--workers` proxy could not start for a minute after a one-process one stopped: the forty-seventh
    session's review); a probe passes beside it, so the port's lock (`_refuse_if_port_locked`) refuses other
    supervisors for its life (a proxy on the same port at another address too, in that case alone). Other
    programs do not know the lock: one binding with SO_REUSEADDR (a one-process `saga serve` too) could take
    the port while no worker listens (their start, or all of them restarting at once), which a supervisor
    that started without that fallback refuses; the cost of not starting for a minute instead."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        with _bind_window(port):
            if port:
                _refuse_if_port_locked(port)
                with socket.socket(family, kind, proto) as probe:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    probe.bind(address)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                sock.bind(address)
            except OSError as e:
                if not port or e.errno != errno.EADDRINUSE:
                    raise
                # The probe passed, so what is left on the port is connections in TIME_WAIT (a proxy that
                # stopped within the minute, whose clients' connections it closed first): bound beside them
                # as the workers will be. A probe beside such a socket passes: the port's lock says it is
                # held, for the supervisor's life (on the same port at another address, too).
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(address)
                _take_port_lock(port)
    except OSError:
        sock.close()
        raise
    return sock


# Supervisors holding their port beside connections in TIME_WAIT (SO_REUSEADDR), for their life: an abstract
# Unix socket named for the port (Linux; gone with the process). Their held socket refuses no probe, and
# their workers' listening sockets do only while one listens (all of them exiting at once, a fault
# `max_exits` survives, left the port to a second supervisor: the forty-seventh session's fourth review)
_PORT_LOCKS: dict[int, socket.socket] = {}


def _port_lock_name(port: int) -> str:
    return f"\0saga-serve-port-held {port}"


def _take_port_lock(port: int) -> None:
    if not sys.platform.startswith("linux"):
        return
    lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        lock.bind(_port_lock_name(port))
    except OSError:
        lock.close()
        raise
    _PORT_LOCKS[port] = lock


def _refuse_if_port_locked(port: int) -> None:
    """EADDRINUSE while another supervisor holds the port beside connections in TIME_WAIT (a probe would
    pass beside its socket: the forty-seventh session's review)."""
    if not sys.platform.startswith("linux"):
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as check:
        try:
            check.bind(_port_lock_name(port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise OSError(errno.EADDRINUSE, "another saga serve holds this port") from e
            raise


def release_port_lock(port: int) -> None:
    """The supervisor stops: its lock on `port`, if it took one, goes."""
    lock = _PORT_LOCKS.pop(port, None)
    if lock is not None:
        lock.close()


# How long a supervisor waits for another's probe and hold of the same port (microseconds, unless it stopped
# between them: then this long, after which it probes anyway)
_WINDOW_WAIT_S = 2.0


@contextlib.contextmanager
def _bind_window(port: int) -> Iterator[None]:
    """Probe and hold made one step against another supervisor's on the same port, however either spells its
    host (a lock named for the address as spelt let 127.0.0.1 and 0.0.0.0 both hold it: the nineteenth
    review). An abstract Unix socket named for the port alone (one per network namespace, as ports are; gone
    with the process), held only between probe and hold (held longer, it would keep proxies off the same
    port on other addresses); one that finds it taken waits for it."""
    if not port or not sys.platform.startswith("linux"):
        yield
        return
    window = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        deadline = time.monotonic() + _WINDOW_WAIT_S
        while True:
            try:
                window.bind(f"\0saga-serve-port-window {port}")
                break
            except OSError as e:
                if e.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    break  # none to take here, or its holder is stuck: the probe alone
                time.sleep(0.001)
        yield
    finally:
        window.close()


class Supervisor:
    def __init__(self, config: ProxyConfig, worker_argv: list[str], environ: dict[str, str]) -> None:
        self.config, self.worker_argv, self.environ = config, worker_argv, environ
        self.count = config.workers
        self.directory = ""
        self.port = 0
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.exits: deque[float] = deque()  # when workers exited, over the last EXIT_WINDOW_S
        self.stopping = asyncio.Event()
        self.failure = ""
        self.started = False  # every worker was ready once

    async def run(self) -> int:
        try:
            held = hold_port(self.config.host, self.config.port)
        except OSError as e:
            address = base_url(self.config.host, self.config.port).removeprefix("http://")  # [::1]:8000
            print(f"saga: error: cannot bind {address}: {e}", file=sys.stderr)
            return 1
        self.directory = tempfile.mkdtemp(prefix="saga-workers-")  # mode 0700
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._signalled)
        try:
            self.port = held.getsockname()[1]
            write_worker_config(self.directory, msgspec.structs.replace(self.config, port=self.port))
            write_tenant_key(self.directory)
            watchers = [asyncio.create_task(self._keep(i)) for i in range(self.count)]
            if await self._all_ready():
                self.started = True
                url = base_url(self.config.host, self.port)
                announce(listening_line(url, self.config), self.config.log_format)
                log.info("%d workers serving port %d", self.count, self.port)
            await self.stopping.wait()
            for task in watchers:
                task.cancel()
            await self._stop_all()
        finally:
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)
            held.close()
            release_port_lock(self.port)
            shutil.rmtree(self.directory, ignore_errors=True)
        if self.failure:
            print(f"saga: error: {self.failure}", file=sys.stderr, flush=True)
            return 1
        return 0

    def _signalled(self) -> None:
        """The first stop signal drains the workers (`_stop_all`); a second one stops them at once, as a
        second one stops a single process (the workers leave a second signal to the supervisor)."""
        if not self.stopping.is_set():
            self.stopping.set()
            return
        log.warning("a second stop signal: stopping the workers at once")
        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()

    async def _all_ready(self) -> bool:
        paths = [ready_file(self.directory, i) for i in range(self.count)]
        while not self.stopping.is_set():
            if all_exist(paths):
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), READY_POLL_S)
        return False

    async def _start(self, index: int) -> asyncio.subprocess.Process:
        env = {
            **self.environ,
            INDEX_VAR: str(index),
            COUNT_VAR: str(self.count),
            DIRECTORY_VAR: self.directory,
        }
        argv = [*self.worker_argv, "--port", str(self.port)]
        return await asyncio.create_subprocess_exec(sys.executable, "-m", "proxy.cli", *argv, env=env)

    async def _keep(self, index: int) -> None:
        """Runs worker `index`, restarting it when it exits, until the supervisor stops."""
        ready = ready_file(self.directory, index)
        delay = RESTART_DELAY_S
        while not self.stopping.is_set():
            proc = self.procs[index] = await self._start(index)
            code = await proc.wait()
            if self.stopping.is_set():
                return
            if not self.started:  # a worker that cannot start (its error is above) is not retried
                self.failure = f"worker {index} exited with code {code} while starting; stopped"
                self.stopping.set()
                return
            with contextlib.suppress(FileNotFoundError):
                os.unlink(ready)
            now = time.monotonic()
            self.exits.append(now)
            while self.exits and self.exits[0] < now - EXIT_WINDOW_S:
                self.exits.popleft()
            if len(self.exits) >= max_exits(self.count):
                self.failure = (
                    f"workers exited {len(self.exits)} times within {EXIT_WINDOW_S:.0f} s "
                    f"(worker {index} last, code {code}); stopped"
                )
                self.stopping.set()
                return
            log.error("worker %d exited with code %s; restarting it in %.1f s", index, code, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            delay = min(delay * 2, MAX_RESTART_DELAY_S)

    def _stop_grace_s(self) -> float:
        """A worker drains its calls for `shutdown_grace_s` after SIGTERM; past that and a margin: SIGKILL."""
        return self.config.shutdown_grace_s + STOP_GRACE_S

    async def _stop_all(self) -> None:
        running = [p for p in self.procs.values() if p.returncode is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running)), self._stop_grace_s())
        except TimeoutError:
            for proc in running:
                if proc.returncode is None:
                    log.error(
                        "worker pid %d did not stop in %.0f s; killing it", proc.pid, self._stop_grace_s()
                    )
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await asyncio.gather(*(p.wait() for p in running))


async def supervise(
    config: ProxyConfig, worker_argv: list[str], environ: dict[str, str] | None = None
) -> int:
    """Runs `config.workers` workers, each `python -m proxy.cli *worker_argv --port P`, until stopped. Its own
    lines (workers exiting and restarted, the listening line) are logged in `config.log_format`, as the
    workers' are."""
    if config.log_format == "json":
        use_json_logs()
    return await Supervisor(config, worker_argv, dict(os.environ if environ is None else environ)).run()
