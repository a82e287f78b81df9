"""The asyncio driver that runs one engine against wall-clock time.

Contract:
- One task per replica loops: `engine.step(now)`, sleep until the step's end (simulated seconds /
  `time_scale` of wall time), then deliver the step's outputs to each request's `RequestStream`. With no
  work it waits on an event (no busy loop); `submit` wakes it.
- A step that schedules nothing because every runnable request waits for a CPU->GPU KV load (simulator.
  offload) is followed by a wait until the load is done (`engine.next_event_time()`), or a `submit`.
- Simulated time advances by step durations while busy, paced to wall time x `time_scale` (when the host
  falls behind, simulated time lags rather than racing ahead); when idle it catches up with wall time, so
  arrival times and latencies are in simulated seconds.
- `lag_s` counts the wall seconds the replica fell behind its schedule and gave up catching up (the host was
  too busy to run it at `time_scale`): a comparison on such a host is not faithful, and `saga demo` says so.
- A request's stream yields its `RequestOutput`s in order and ends with the one carrying `finish_reason`; if
  the engine fails, every open stream yields the exception instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from simulator.engine import Engine, EngineRequest, RequestOutput

log = logging.getLogger(__name__)

_MAX_LAG_S = 0.1  # wall seconds behind schedule before the pacing gives up catching up


class RequestStream:
    """Outputs of one request as the driver delivers them; `merge_into` sends them, tagged, to a queue
    shared with other requests (a request's choices, read in the order the engine delivered them)."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.finished = False
        self._queue: asyncio.Queue[RequestOutput | BaseException] = asyncio.Queue()
        self._merged: asyncio.Queue[tuple[int, RequestOutput | BaseException]] | None = None
        self._index = 0

    def put(self, item: RequestOutput | BaseException) -> None:
        if self._merged is not None:
            self._merged.put_nowait((self._index, item))
        else:
            self._queue.put_nowait(item)

    def merge_into(
        self, merged: asyncio.Queue[tuple[int, RequestOutput | BaseException]], index: int
    ) -> None:
        """Deliver this request's outputs (those already delivered first) to `merged` as (index, output);
        whoever reads it sets `finished`."""
        while not self._queue.empty():
            merged.put_nowait((index, self._queue.get_nowait()))
        self._merged, self._index = merged, index

    async def get(self) -> RequestOutput:
        """The next output; raises what the engine raised if it failed."""
        item = await self._queue.get()
        if isinstance(item, BaseException):
            self.finished = True
            raise item
        if item.finish_reason is not None:
            self.finished = True
        return item


class ReplicaDriver:
    """Runs `engine` in real time; `on_output(output, simulated_time)` sees every delivered output."""

    def __init__(
        self,
        engine: Engine,
        *,
        time_scale: float = 1.0,
        on_output: Callable[[RequestOutput, float], None] | None = None,
    ) -> None:
        if time_scale <= 0:
            raise ValueError(f"time_scale must be positive, got {time_scale}")
        self.engine = engine
        self.time_scale = time_scale
        self._on_output = on_output
        self._streams: dict[str, RequestStream] = {}
        self._wake = asyncio.Event()
        self._now = 0.0  # simulated start of the next step
        self._step_end: float | None = None  # simulated end of the step in flight
        self._anchor_sim = 0.0
        self._anchor_wall: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._failed: Exception | None = None
        self.lag_s = 0.0  # wall seconds lost behind schedule (see the module docstring)

    # ---- clock ----------------------------------------------------------------------------------------

    def _wall(self) -> float:
        return asyncio.get_running_loop().time()

    def now(self) -> float:
        """Simulated now: never before the engine's clock, never past the end of the step in flight."""
        if self._anchor_wall is None:
            return self._now
        t = self._anchor_sim + (self._wall() - self._anchor_wall) * self.time_scale
        if self._step_end is not None:
            t = min(t, self._step_end)
        return max(t, self._now)

    def set_time_scale(self, time_scale: float) -> None:
        """Change the pace from now on (simulated time so far is kept)."""
        if time_scale <= 0:
            raise ValueError(f"time_scale must be positive, got {time_scale}")
        if self._anchor_wall is not None:
            self._anchor(self.now())
        self.time_scale = time_scale

    def _anchor(self, sim: float) -> None:
        self._anchor_sim = sim
        self._anchor_wall = self._wall()

    # ---- requests -------------------------------------------------------------------------------------

    def submit(self, req: EngineRequest) -> RequestStream:
        """Queue `req` now; raises simulator.engine.InvalidRequestError if the engine refuses it, or
        RuntimeError if the engine has failed."""
        if self._failed is not None:
            raise RuntimeError(f"simulated engine failed: {self._failed!r}")
        self.engine.add_request(req, self.now())
        stream = RequestStream(req.request_id)
        self._streams[req.request_id] = stream
        self._wake.set()
        return stream

    def abort(self, request_id: str) -> None:
        """Stop a request (client gone); harmless if it already finished."""
        self._streams.pop(request_id, None)
        self.engine.abort(request_id)

    # ---- loop -----------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._anchor(self._now)
            self._task = asyncio.create_task(self._run(), name="simulated-replica")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        try:
            await self._loop()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the engine is broken: fail every request instead of hanging it
            log.exception("simulated engine failed")
            self._failed = e
            for stream in self._streams.values():
                stream.put(e)
            self._streams.clear()

    async def _loop(self) -> None:
        engine = self.engine
        while True:
            if not engine.has_unfinished():
                self._wake.clear()
                await self._wake.wait()
                self._now = self.now()
                self._anchor(self._now)
                continue
            result = engine.step(self._now)
            end = result.end
            if result.duration > 0:
                self._step_end = end
                delay = self._anchor_wall_of(end) - self._wall()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -_MAX_LAG_S:
                    self.lag_s -= delay
                    self._anchor(end)
                self._step_end = None
            else:
                wake = engine.next_event_time() if result.num_preempted == 0 else None
                if wake is not None and wake > end:
                    await self._idle_until(wake)  # nothing runnable until a CPU->GPU KV load is done
                    continue
                await asyncio.sleep(0)
            self._now = end
            self._deliver(result.outputs, end)

    async def _idle_until(self, sim: float) -> None:
        """Wait until simulated time `sim`, or less if a request is submitted meanwhile."""
        self._wake.clear()
        delay = self._anchor_wall_of(sim) - self._wall()
        if delay > 0:
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass
            else:
                self._now = max(self._now, self.now())
                return
        self._now = max(self._now, sim)

    def _anchor_wall_of(self, sim: float) -> float:
        assert self._anchor_wall is not None
        return self._anchor_wall + (sim - self._anchor_sim) / self.time_scale

    def _deliver(self, outputs: list[RequestOutput], now: float) -> None:
        streams = self._streams
        for out in outputs:
            stream = streams.get(out.request_id)
            if stream is None:
                continue  # aborted while the step ran
            if out.finish_reason is not None:
                del streams[out.request_id]
            if self._on_output is not None:
                self._on_output(out, now)
            stream.put(out)
