"""Fault injection for a simulated replica, switched at run time through its admin API.

Contract:
- `POST /saga/v1/faults` with a `Fault` (JSON) sets the replica's fault, replacing any other; `GET` shows it;
  `DELETE` clears it (answers 200 either way). Faults with `duration_s` end by themselves; `crash` needs one,
  since a crashed replica cannot be reached to clear it.
- Kinds, as a client of the replica sees them:
  - `crash`: the listening socket closes and every open connection is cut (new connections are refused)
    until `duration_s` has passed; then it listens again on the same port, with its engine state intact
    (a restart that kept its KV cache: the simplest case for the proxy).
  - `hang`: requests are accepted and read, and no answer starts until the fault ends (then they are
    served); health checks hang too.
  - `die_mid_stream`: a streamed answer stops after `after_chunks` events and the connection is cut; a whole
    answer sends its headers and half its body, then the connection is cut.
  - `slow`: the engine runs `factor` times slower (the same work takes `factor` times the wall time).
  - `error`: every inference call answers `status` (500 or 503) with a vLLM-style error body.
  - `flap_health`: `/health` alternates between 200 and 503 every `period_s` (inference keeps working).
- Only the inference surface (`/v1/*`, `/tokenize`, `/detokenize`) and `/health` are affected; `/metrics` and
  the admin API never are (except under `crash`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import msgspec
from aiohttp import web

from simulator.driver import ReplicaDriver
from simulator.http_common import read_body
from simulator.openai_api import error_body

FaultKind = Literal["none", "crash", "hang", "die_mid_stream", "slow", "error", "flap_health"]


class Fault(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    kind: FaultKind
    duration_s: float | None = None  # wall seconds; None: until cleared
    status: int = 503  # `error`
    factor: float = 10.0  # `slow`
    after_chunks: int = 2  # `die_mid_stream`
    period_s: float = 1.0  # `flap_health`

    def validate(self) -> None:
        if self.duration_s is not None and not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise ValueError("duration_s must be a positive number of seconds")
        if self.kind == "crash" and self.duration_s is None:
            raise ValueError("a crash needs duration_s: a crashed replica cannot be reached to clear it")
        if self.kind == "error" and self.status not in (500, 502, 503, 504):
            raise ValueError("status must be 500, 502, 503 or 504")
        if not (math.isfinite(self.factor) and 1.0 <= self.factor <= 1000.0):
            raise ValueError("factor must be between 1 and 1000")
        if self.after_chunks < 0:
            raise ValueError("after_chunks must be >= 0")
        if not (math.isfinite(self.period_s) and self.period_s > 0):
            raise ValueError("period_s must be > 0")


_NONE = Fault(kind="none")
_INFERENCE_PREFIXES = ("/v1/", "/tokenize", "/detokenize")


class Listener:
    """How a fault reaches the server's socket: `stop(keep)` closes it and cuts every connection but `keep`
    (the admin call's own, closed once it is answered), `start` listens again on the same address. Supplied
    by whoever runs the server (simulator.server)."""

    def __init__(
        self, stop: Callable[[object | None], Awaitable[None]], start: Callable[[], Awaitable[None]]
    ) -> None:
        self.stop = stop
        self.start = start


class FaultController:
    """The replica's current fault, its expiry, and the side effects of setting and clearing it."""

    def __init__(self, driver: ReplicaDriver, clock: Callable[[], float] = time.monotonic) -> None:
        self.driver = driver
        self.clock = clock
        self.listener: Listener | None = None
        self.fault = _NONE
        self.since = clock()
        self._base_time_scale = driver.time_scale
        self._cleared = asyncio.Event()
        self._cleared.set()
        self._expiry: asyncio.Task[None] | None = None
        self.injected_total = 0

    def current(self) -> Fault:
        return self.fault

    async def set(self, fault: Fault, keep: object | None = None) -> None:
        """Replace the fault; `keep` is the connection of the admin call (spared by `crash`)."""
        fault.validate()
        if fault.kind == "crash" and self.listener is None:
            raise ValueError("this replica's server cannot be crashed (no listener hook)")
        await self.clear()
        if fault.kind == "none":
            return
        self.fault, self.since = fault, self.clock()
        self.injected_total += 1
        self._cleared.clear()
        if fault.kind == "slow":
            self.driver.set_time_scale(self._base_time_scale / fault.factor)
        elif fault.kind == "crash":
            assert self.listener is not None
            await self.listener.stop(keep)
        if fault.duration_s is not None:
            self._expiry = asyncio.create_task(self._expire_after(fault.duration_s))

    async def clear(self) -> None:
        expiry, self._expiry = self._expiry, None
        if expiry is not None and expiry is not asyncio.current_task():
            expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await expiry
        fault, self.fault = self.fault, _NONE
        if fault.kind == "slow":
            self.driver.set_time_scale(self._base_time_scale)
        elif fault.kind == "crash" and self.listener is not None:
            await self.listener.start()
        self._cleared.set()

    async def _expire_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.clear()

    # -- what requests see ----------------------------------------------------------------------------

    def health_ok(self) -> bool:
        if self.fault.kind != "flap_health":
            return True
        return int((self.clock() - self.since) / self.fault.period_s) % 2 == 1

    async def wait_cleared(self) -> None:
        await self._cleared.wait()

    def cut_after_chunks(self) -> int | None:
        """Streamed answers are cut after this many events, or None."""
        return self.fault.after_chunks if self.fault.kind == "die_mid_stream" else None


FAULTS = web.AppKey("faults", FaultController)


def cut_connection(request: web.Request) -> None:
    """Drop the connection under a response, as a dying server would (no closing chunk, no error)."""
    if request.transport is not None:
        request.transport.abort()


@web.middleware
async def inject_faults(request: web.Request, handler: Any) -> web.StreamResponse:
    faults = request.app[FAULTS]
    kind = faults.fault.kind
    path = request.path
    if kind == "none" or not (path == "/health" or path.startswith(_INFERENCE_PREFIXES)):
        response: web.StreamResponse = await handler(request)
        return response
    if kind == "hang":
        await faults.wait_cleared()
    elif path == "/health":
        if not faults.health_ok():
            return web.json_response({"error": "unhealthy (injected fault)"}, status=503)
    elif kind == "error":
        status = faults.fault.status
        body = error_body(status, f"injected fault: replica answers {status}")
        return web.Response(body=body, status=status, content_type="application/json")
    response = await handler(request)
    if kind == "die_mid_stream" and isinstance(response, web.Response) and response.body is not None:
        body = bytes(response.body)  # type: ignore[arg-type]
        partial = web.StreamResponse(status=response.status, headers=response.headers)
        partial.content_length = len(body)
        await partial.prepare(request)
        await partial.write(body[: len(body) // 2])
        cut_connection(request)
        return partial
    return response


async def get_fault(request: web.Request) -> web.Response:
    faults = request.app[FAULTS]
    return web.Response(
        body=msgspec.json.encode({"fault": faults.current(), "injected_total": faults.injected_total}),
        content_type="application/json",
    )


async def post_fault(request: web.Request) -> web.Response:
    try:
        fault = msgspec.json.decode(await read_body(request), type=Fault)
        await request.app[FAULTS].set(fault, keep=request.protocol)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:
        body = error_body(400, f"bad fault: {e}")
        return web.Response(body=body, status=400, content_type="application/json")
    response = await get_fault(request)
    if fault.kind == "crash":
        response.force_close()  # the last answer on this connection: the server is down
    return response


async def delete_fault(request: web.Request) -> web.Response:
    await request.app[FAULTS].clear()
    return await get_fault(request)


def add_fault_routes(app: web.Application, driver: ReplicaDriver) -> None:
    """Install the fault controller, its middleware-visible state and its admin routes on `app`."""
    app[FAULTS] = FaultController(driver)
    app.router.add_get("/saga/v1/faults", get_fault)
    app.router.add_post("/saga/v1/faults", post_fault)
    app.router.add_delete("/saga/v1/faults", delete_fault)

    async def clear_on_cleanup(app: web.Application) -> None:
        app[FAULTS].listener = None  # the server is going away: do not reopen it
        await app[FAULTS].clear()

    app.on_cleanup.append(clear_on_cleanup)
