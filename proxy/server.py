"""Running the proxy app: on a given port for `saga serve`, or on a free one inside tests and the demo.

With `server: fast` (the default) the call routes are served by proxy/fast_server.py and every other route by
the aiohttp app behind it; with `server: aiohttp`, aiohttp serves everything. The aiohttp runner answers
aiohttp's own protocol-level refusals in the OpenAI error shape, cancels a handler whose client hung up (so
its upstream call is aborted too), and writes one access-log line per request to the `saga.access` logger.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator

from aiohttp import web

from proxy.aiohttp_drain import drain_over_message, end_at_the_deadline
from proxy.app import create_app
from proxy.config import ProxyConfig
from proxy.connection_handoff import HANDOFF_COUNTS, HandoffCounts
from proxy.context import CORE, GATE, METRICS, WORKERS
from proxy.discovery import Resolver
from proxy.errors import OpenAIErrorAppRunner
from proxy.fast_server import FastServer
from proxy.identity import TENANT_KEY
from proxy.logs import IdentifiedAccessLogger, announce, batch_access_log, unbatch_access_log, use_json_logs
from proxy.malloc_tuning import tune_malloc
from proxy.scheduler import SchedulerCore
from proxy.worker_set import WorkerSet

log = logging.getLogger("saga.proxy")
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tf'
ACCESS_LOG_FLUSH_S = 0.2  # `saga serve` writes the access log out this often


def base_url(host: str, port: int) -> str:
    """`http://host:port`, an IPv6 address in brackets (RFC 3986; `http://::1:8000` is no URL)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextlib.asynccontextmanager
async def running_proxy(
    config: ProxyConfig,
    core: SchedulerCore | None = None,
    resolver: Resolver | None = None,
    workers: WorkerSet | None = None,
    drain_s: float = 0.0,
) -> AsyncIterator[str]:
    """Serves the proxy while the context is open and yields its base URL (port 0 picks a free port).

    `core` may be given to share or inspect the scheduler core, `resolver` to answer DNS discovery (tests),
    `workers` to run it as one worker of several (tests; `saga serve` takes it from the environment).
    On leaving, the fast server stops accepting connections, then lets the calls in progress finish for up to
    `drain_s` seconds before it closes what is left (`saga serve` on SIGTERM: `shutdown_grace_s`)."""
    if resolver is None:
        app = create_app(config, core, workers=workers)
    else:
        app = create_app(config, core, resolver, workers=workers)
    if app[WORKERS] is not None:  # before the app is frozen: /metrics can read them
        app[HANDOFF_COUNTS] = app[METRICS].handoffs = HandoffCounts()
    fast = server_kind(config) == "fast"
    runner = OpenAIErrorAppRunner(
        app,
        # Under the fast server, it writes every request's access line itself.
        access_log=logging.getLogger("saga.access") if config.access_log and not fast else None,
        access_log_format=ACCESS_LOG_FORMAT,
        access_log_class=IdentifiedAccessLogger,  # (the call's session and replica in JSON lines)
        handler_cancellation=True,
        # `server: aiohttp`: on leaving, aiohttp lets the handlers finish for this long (its default: 60 s,
        # past a pod's grace period), then cancels them
        shutdown_timeout=drain_s,
    )
    await runner.setup()
    try:
        if not fast:
            site = web.TCPSite(runner, config.host, config.port, backlog=1024)
            await site.start()
            host, port = runner.addresses[0][:2]
            yield base_url(host, port)
            return
        # Started by the supervisor (from the environment), all workers start at once: wait for the others.
        wait_for_peers = workers is None and app[WORKERS] is not None
        workers = app[WORKERS]
        with contextlib.ExitStack() as stack:
            if workers is None:
                private = stack.enter_context(tempfile.TemporaryDirectory(prefix="saga-"))
                PRIVATE_DIRECTORIES.add(private)
                stack.callback(PRIVATE_DIRECTORIES.discard, private)
                inner = os.path.join(private, "app.sock")  # only this process's user can reach it
            else:  # other workers gather metrics and state from it (the supervisor made the dir 0700)
                inner = workers.app_socket(workers.index)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(inner)  # left by this worker's previous run (the supervisor restarted it)
            await web.UnixSite(runner, inner).start()
            protocol = FastServer(app, inner)
            await protocol.listen_for_workers()
            if wait_for_peers and workers is not None:
                await _peers_listening(workers, protocol)
            # Workers share the port: the kernel spreads new connections over them (SO_REUSEPORT).
            server = await asyncio.get_running_loop().create_server(
                protocol, config.host, config.port, backlog=1024, reuse_port=workers is not None
            )
            try:
                host, port = server.sockets[0].getsockname()[:2]
                yield base_url(host, port)
            finally:
                server.close()  # no new connections; those open are served while the calls drain, not kept
                protocol.drain()
                await _drained(protocol, app, drain_s)  # (no grace: what is left ends as at a deadline)
                protocol.close()
                await server.wait_closed()
    finally:
        # `server: aiohttp`: its own wait on the handlers is twice `shutdown_timeout` (none at all for 0);
        # the drain ends at `drain_s`, with the proxy's own ends, as the fast server's
        deadline = (
            None
            if fast
            else asyncio.get_running_loop().call_later(drain_s, end_at_the_deadline, app, drain_s)
        )
        try:
            await runner.cleanup()
        finally:
            if deadline is not None:
                deadline.cancel()


# The private directories `running_proxy` made in TMPDIR (one process): a second signal's `os._exit` removes
# them, as leaving the `with` would
PRIVATE_DIRECTORIES: set[str] = set()
# What stops `saga serve` gracefully: SIGHUP too (its terminal went away; there is no reload to do), which
# otherwise killed it at once, calls and all, and left `--workers`' private directory behind.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
PEERS_WAIT_S = 10.0  # at start, how long a worker waits for the others before taking clients anyway
PEERS_POLL_S = 0.02


def all_exist(paths: list[str]) -> bool:
    return all(os.path.exists(p) for p in paths)


async def _peers_listening(workers: WorkerSet, server: FastServer) -> None:
    """Waits (up to `PEERS_WAIT_S`) until every other worker takes hand-offs and relayed calls, so the first
    clients' calls reach their owners instead of being served where they were read. A worker restarted by the
    supervisor finds its peers there already; one that never comes is left to the hand-off's own fallback."""
    paths = [p for i in workers.others() for p in (workers.handoff_socket(i), server.calls_socket(i))]
    for _ in range(int(PEERS_WAIT_S / PEERS_POLL_S)):
        if all_exist(paths):
            return
        await asyncio.sleep(PEERS_POLL_S)


def ready_file(directory: str, index: int) -> str:
    """Made by worker `index` once it serves (the supervisor waits for every worker's)."""
    return os.path.join(directory, f"ready-{index}")


def server_kind(config: ProxyConfig) -> str:
    """Which server holds client connections (a seam the tests use to run the e2e suite under both)."""
    return config.server


FULL_COLLECTION_AFTER = 1000  # middle-generation collections per full one (CPython's default: 10)
# ... and at least one full collection this often, by the loop's clock: CPython counts allocations less
# deallocations, so in a steady state its generations fill slowly, and in a soak at ~17 calls a second the
# full collection that 1,000 middle ones call for came about once a day (the probe's gc stats: 3 middle ones
# in 5 minutes). Garbage in cycles that lived long enough to reach the oldest generation stayed that long.
FULL_COLLECTION_PERIOD_S = 300.0


def freeze_start_up_heap() -> None:
    """Move everything alive after start-up (modules, the app, the scheduler core: ~100k objects) out of the
    cyclic GC's reach, so its full (generation-2) collections scan only what calls created since.

    Measured under load (docs/results/overhead.md): each full collection over the start-up heap paused the
    event loop 20-65 ms, which was the proxy's p99; after the freeze, ~6 ms. The frozen objects are the
    long-lived ones anyway; cycles among them are never collected, which costs nothing worth having.

    With the start-up heap frozen, CPython's rule for a full collection (survivors pending over a quarter of
    the long-lived heap) no longer holds them back, so they ran far more often over what calls keep alive
    (sessions: ~1.4 tracked objects per call for up to two minutes) and a streamed call cost ~25% more CPU.
    So full collections wait for 1,000 middle-generation ones instead of 10 (at full load still one every
    few seconds; cycles that die young are collected as before): with both, 112-115 µs of CPU per whole
    answer and 177-180 per stream against 131-135 and 182-186 without either (docs/results/overhead.md)."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_AFTER)


def open_admin_warning(config: ProxyConfig) -> None:
    """Client API keys make tenants, but the admin API (every tenant's sessions: listed, ended) is locked by
    `admin_token` alone: said at start when only the first is set."""
    if config.api_keys and config.admin_token is None:
        log.warning(
            "api_keys are set but admin_token is not: /saga/v1/* (every tenant's sessions, listed and ended) "
            "answers any client that reaches the port; set admin_token to lock it"
        )


def listening_line(url: str, config: ProxyConfig) -> str:
    """The line saying where the proxy listens and what it fronts: the configured replicas and, with DNS
    discovery, the name it resolves (with discovery alone the line ended in a bare arrow)."""
    policy = config.policy if isinstance(config.policy, str) else "custom"
    fronts = list(config.replicas)
    if config.discovery is not None:
        fronts.append(f"the replicas DNS gives for {config.discovery.name}:{config.discovery.port}")
    return f"SAGA proxy listening on {url} (policy {policy}) -> {', '.join(fronts)}"


async def _drained(protocol: FastServer, app: web.Application, within_s: float) -> None:
    """Waits until no client connection has a call in progress and no call is in flight, or `within_s`. Past
    that, the calls still waiting in the proxy are refused (503) and those in progress get the proxy's own
    end (`FastServer.cut`), so that no client reads a bare closed connection."""
    core = app[CORE]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    busy = protocol.busy() or len(core.in_flight)
    if busy:
        log.info("draining: %d calls in progress, waiting up to %g s", busy, within_s)
    while loop.time() < deadline:  # polled: calls end on many paths, none of which need to signal a drain
        if not (protocol.busy() or core.in_flight):
            return
        await asyncio.sleep(0.05)
    left = protocol.busy()
    if not left:
        return
    message = drain_over_message(within_s)
    log.warning("drain time (%g s) over: ending %d connections with calls in progress", within_s, left)
    gate = app[GATE]
    gate.stopping = True  # what ends now is the proxy's doing, not the clients' (logged and counted so)
    gate.apply(core.refuse_waiting(message))
    await asyncio.sleep(0.1)  # (their handlers answer the 503s in a turn or two)
    protocol.cut(message)


async def serve_forever(config: ProxyConfig) -> None:
    """`saga serve`'s proxy, or one worker of `saga serve --workers N` (proxy/supervisor.py), until killed."""
    tune_malloc()  # before the first large body is read (proxy/malloc_tuning.py)
    if config.log_format == "json":
        use_json_logs()
    access_log = logging.getLogger("saga.access")
    access = batch_access_log(access_log) if config.access_log else None
    workers = WorkerSet.from_environ()
    if workers is not None:
        secret = workers.tenant_key()
        if secret is not None:
            TENANT_KEY.use(secret)  # the supervisor's: one API key names one tenant on every worker
        else:
            log.error(
                "worker %d: no tenant.key in the worker directory (removed or emptied since the supervisor "
                "wrote it): tenants named by API key differ between this worker and the others",
                workers.index,
            )
    supervisor = os.getppid()
    stopping = asyncio.Event()

    def stop() -> None:  # SIGTERM / SIGINT / SIGHUP: drain (calls in progress finish)
        if not stopping.is_set():
            stopping.set()
        elif workers is None:  # a second one: stop at once (what `with` blocks would remove, removed first)
            for private in PRIVATE_DIRECTORIES:
                shutil.rmtree(private, ignore_errors=True)
            os._exit(1)
        # A worker's second signal is left to its supervisor (proxy/supervisor.py), which stops it at once
        # on its own second one: a signal to the process group (Ctrl-C, systemd) reaches every worker and
        # then the supervisor's own SIGTERM follows, which read as a second signal cut every call at once.

    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop)
    try:
        async with running_proxy(config, drain_s=config.shutdown_grace_s) as url:
            policy = config.policy if isinstance(config.policy, str) else "custom"
            if workers is None or workers.index == 0:
                open_admin_warning(config)
            if workers is None:
                log.info("SAGA proxy on %s, policy %s, %d replicas", url, policy, len(config.replicas))
                announce(listening_line(url, config), config.log_format)
            else:  # the supervisor prints the listening line once every worker is ready
                log.debug("worker %d of %d on %s", workers.index, workers.count, url)
                os.close(
                    os.open(ready_file(workers.directory, workers.index), os.O_CREAT | os.O_WRONLY, 0o600)
                )
            freeze_start_up_heap()
            full_collection_at = loop.time() + FULL_COLLECTION_PERIOD_S
            while not stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), ACCESS_LOG_FLUSH_S)
                if access is not None:
                    access.flush()
                if loop.time() >= full_collection_at:  # a few ms over what calls keep alive
                    gc.collect()
                    full_collection_at = loop.time() + FULL_COLLECTION_PERIOD_S
                if workers is not None and os.getppid() != supervisor:
                    log.error("worker %d: the supervisor is gone; stopping", workers.index)
                    return
            log.info(
                "stopping: no new connections; calls in progress get up to %g s", config.shutdown_grace_s
            )
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
        if access is not None:
            unbatch_access_log(access_log, access)
