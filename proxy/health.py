"""Replica health checks and load scraping, feeding `replica_stats` events to the core.

Each round probes every replica's `/health` and, for healthy ones, reads vLLM's queue and KV gauges and its KV
capacity (`vllm:cache_config_info`: `num_gpu_blocks` x `block_size` tokens, and whether `kv_offloading_size`
gives it a CPU KV tier) from `/metrics`; each replica's `ReplicaGuard` turns the probe into the health the
core sees (thresholds, circuit breaker). A replica that is down is reported with zero load, so no stale figure
of a dead replica steers routing or shows in the state; its KV capacity (the hardware's) is kept until a page
it answers says another, or none (a replica restarted publishing none). (The core's periodic housekeeping,
`tick`, runs on its own and more often: proxy/housekeeping.py.) Each replica is probed on its own schedule, so
a replica that never answers delays no other's probes. Its health is its `/health`: a `/metrics` that fails,
is slow or endless leaves the replica up with its load figures cleared (as a down replica's); a replica up
before any page of it was read is taken to have the smallest KV capacity of the others until one is (unknown,
its room would be every waiting workflow's to admission), and held down while none is known yet and another
replica's page may give one (a 404, no route, reads as a page of nothing). What a probe reads is bounded
(`MAX_PROBE_BYTES`, `MAX_MODELS`): a replica answering an endless `/metrics` or `/v1/models` costs the proxy
that much memory at most, and is read as publishing no figures (or no model list); a page is parsed a slice of
lines at a time, the calls running between slices. A figure that is no count (NaN, an infinity, a negative
request count) is unknown, as if not published; a probe that fails in any other way fails for its replica
alone, and the loop goes on.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Callable, Mapping

import aiohttp
import msgspec

from proxy.context import Guards, down_stats
from proxy.model_routing import ReplicaModels
from proxy.scheduler import Decision, ReplicaStats, SchedulerCore

log = logging.getLogger("saga.health")

_MODELS_EVERY = 5  # health rounds between two reads of each replica's /v1/models
# vLLM's /metrics is ~0.1-1 MB, even with many models and LoRA adapters (16 MiB before 2026-12-06: reading
# a page that size took the event loop 0.1-0.75 s every round)
MAX_PROBE_BYTES = 4 * 1024 * 1024
# model ids kept of one replica's /v1/models (a base model and its LoRA adapters: vLLM serves a few
# hundred at most); past it the rest are left out (a replica listing a million kept ~670 MB in the proxy)
MAX_MODELS = 4096
# a page is read a slice at a time, the event loop running calls between slices (~1-2 ms each at most)
_SLICE_CHARS = 32 * 1024


async def read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body, or None once it passes `limit` bytes (the rest is not read)."""
    parts, size = [], 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


_GAUGES = {
    "vllm:num_requests_waiting": "waiting",
    "vllm:num_requests_running": "running",
    "vllm:kv_cache_usage_perc": "kv_usage",
}
_CACHE_CONFIG = "vllm:cache_config_info"
_MAX_CAPACITY_TOKENS = 2**53  # KV tokens one engine may report: a float holds every count up to it exactly
# A sample line of one of the four families the proxy reads: name, labels (to the line's last "}", so a "}"
# inside a label value is kept), value, optional timestamp. Every other line is skipped unread: vLLM's
# /metrics is ~600 lines of histograms per model, and prometheus_client's parser, which reads them all, took
# ~12 ms of the event loop for one replica's 60 KB every health round (16 replicas: ~10% of a core).
_SAMPLE = re.compile(
    r"^(vllm:(?:num_requests_waiting|num_requests_running|kv_cache_usage_perc|cache_config_info))"
    r"(?:\{(.*)\})?[ \t]+(\S+)(?:[ \t]+\S+)?[ \t\r]*$",  # (a page with CRLF line ends reads the same)
    re.MULTILINE,
)
# (possessive: a label value that never closes is given up at the page's end, not retried a character shorter
# each time)
_LABEL = re.compile(r'\s*+([a-zA-Z_][a-zA-Z0-9_]*+)\s*+=\s*+"([^"\\]*+(?:\\.[^"\\]*+)*+)"\s*+,?')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
_ESCAPE = re.compile(r"\\[\\\"n]")


def _labels(text: str) -> dict[str, str]:
    """A sample's labels, with the text format's escapes (backslash, quote, newline) undone, read one after
    the other from the start and up to the first that is not a label: linear in the text. (Searching for
    labels anywhere in it instead tried a label at every character, each try running to the end of a run of
    name characters or an unclosed quote: 8 KB took 0.6 s, and a replica's page may hold 16 MB.)"""
    labels = {}
    pos, end = 0, len(text)
    while pos < end:
        m = _LABEL.match(text, pos)
        if m is None:
            break
        value = m.group(2)
        labels[m.group(1)] = _ESCAPE.sub(lambda e: _UNESCAPE[e.group()], value) if "\\" in value else value
        pos = m.end()
    return labels


class _LoadPage:
    """What `parse_load` reads of a page, fed a part at a time (each part whole lines)."""

    def __init__(self) -> None:
        self.found: dict[str, float] = {}
        self.gauges: dict[str, list[float]] = {}
        self.capacity = 0.0

    def feed(self, text: str, start: int = 0, end: int | None = None) -> None:
        found, gauges = self.found, self.gauges
        for m in _SAMPLE.finditer(text, start, len(text) if end is None else end):
            name, label_text, value_text = m.group(1), m.group(2), m.group(3)
            try:
                value = float(value_text)
            except ValueError:
                continue
            if name != _CACHE_CONFIG:
                gauges.setdefault(_GAUGES[name], []).append(value)
                continue
            labels = _labels(label_text or "")
            offloading = labels.get("kv_offloading_size")
            if offloading is not None:  # a vLLM that has the option says whether it is on
                on = 1.0 if _offloading_on(offloading) else 0.0
                found["cpu_kv_tier"] = max(found.get("cpu_kv_tier", 0.0), on)
            try:
                blocks = int(labels.get("num_gpu_blocks", ""))
                size = int(labels.get("block_size", ""))
            except ValueError:
                continue
            # a negative or zero label is no capacity, not a smaller one; nor is one past any GPU's (a float
            # could not hold the sum: the whole probe failed with OverflowError)
            if blocks > 0 and size > 0 and blocks * size <= _MAX_CAPACITY_TOKENS:
                self.capacity += blocks * size

    def result(self) -> dict[str, float]:
        found = dict(self.found)
        if self.capacity:
            found["kv_capacity_tokens"] = self.capacity
        for field, values in self.gauges.items():
            if field == "kv_usage":
                found[field] = max(values)
                continue
            total = 0.0  # left to right, as Python 3.11's sum() adds (3.12's compensates): the same on both
            for value in values:
                total += value
            found[field] = total
        return found


def parse_load(metrics_text: str) -> dict[str, float]:
    """vLLM's load gauges summed over engines (a replica may run several), and its KV capacity in tokens
    (`kv_capacity_tokens`, summed over engines); missing figures are left out. Reads only the four families
    it needs (`_SAMPLE`); a sample of them whose value is not a number is skipped."""
    page = _LoadPage()
    page.feed(metrics_text)
    return page.result()


async def read_load(metrics_text: str) -> dict[str, float]:
    """`parse_load`, a slice of whole lines at a time, letting the event loop run between slices, so that a
    large page does not hold up the calls; a line longer than a slice is no sample vLLM writes and is skipped
    unread (a pattern tried on one line of megabytes would be a long step again)."""
    page = _LoadPage()
    start, size = 0, len(metrics_text)
    while start < size:
        end = start + _SLICE_CHARS
        if end < size:
            line_end = metrics_text.rfind("\n", start, end)
            if line_end < 0:  # one line longer than a slice: skipped to its end
                line_end = metrics_text.find("\n", end)
                start = size if line_end < 0 else line_end + 1
                continue
            end = line_end + 1
        page.feed(metrics_text, start, min(end, size))
        start = end
        if start < size:
            await asyncio.sleep(0)
    return page.result()


def _offloading_on(label: str) -> bool:
    """Whether a `kv_offloading_size` label names a CPU KV tier: a positive, finite number of GiB (vLLM writes
    "None" when offloading is off)."""
    try:
        size = float(label)
    except ValueError:
        return False
    return 0 < size < math.inf


class _Model(msgspec.Struct):
    id: str


class _Models(msgspec.Struct):
    data: list[_Model] = msgspec.field(default_factory=list)


async def models_of(
    session: aiohttp.ClientSession,
    replica_id: str,
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
) -> frozenset[str] | None:
    """The model ids a replica's `/v1/models` lists; None when it did not answer. `headers`: the upstream
    key (vLLM's `--api-key` guards `/v1/*`, not `/health` or `/metrics`)."""
    try:
        async with session.get(
            replica_id + "/v1/models", timeout=aiohttp.ClientTimeout(total=timeout_s), headers=headers
        ) as r:
            if r.status != 200:
                return None
            body = await read_capped(r, MAX_PROBE_BYTES)
            if body is None:
                log.warning(
                    "replica %s answered /v1/models with over %d bytes: ignored", replica_id, MAX_PROBE_BYTES
                )
                return None
            listed = msgspec.json.decode(body, type=_Models).data
            if len(listed) > MAX_MODELS:
                log.warning(
                    "replica %s lists %d models: the first %d kept", replica_id, len(listed), MAX_MODELS
                )
                del listed[MAX_MODELS:]
            return frozenset(m.id for m in listed)
    except (aiohttp.ClientError, TimeoutError, msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None  # (msgspec raises RecursionError for JSON nested past its depth, e.g. 100,000 "[")


async def probe(session: aiohttp.ClientSession, replica_id: str, timeout_s: float) -> ReplicaStats:
    """The replica's health, load and KV capacity in tokens (0: its page publishes none, or it has no
    `/metrics` route; None: no page read, the capacity known stays)."""
    return (await probe_why(session, replica_id, timeout_s))[0]


async def probe_why(
    session: aiohttp.ClientSession, replica_id: str, timeout_s: float
) -> tuple[ReplicaStats, str]:
    """`probe`, and why its health check failed ("" when it passed): what the log line saying the replica is
    down and its `/saga/v1/replicas` row give (before 2026-12-06 neither said why: a replica refusing
    connections, one whose name did not resolve and one answering 404 all read alike)."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with session.get(replica_id + "/health", timeout=timeout) as resp:
            if resp.status != 200:
                return ReplicaStats(replica_id, healthy=False), f"GET /health answered {resp.status}"
    except TimeoutError:
        why = f"no answer to GET /health within health_timeout_s ({timeout_s:g} s)"
        return ReplicaStats(replica_id, healthy=False), why
    except aiohttp.ClientConnectorError as e:
        return ReplicaStats(replica_id, healthy=False), f"cannot connect: {e.os_error.strerror or e.os_error}"
    except (aiohttp.ClientError, ValueError) as e:
        return ReplicaStats(replica_id, healthy=False), f"GET /health failed: {e!r}"[:300]
    return await _load(session, replica_id, timeout_s), ""


async def _load(session: aiohttp.ClientSession, replica_id: str, timeout_s: float) -> ReplicaStats:
    """A healthy replica's load and KV capacity from its `/metrics` (see `probe`)."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    # Its health said, its figures are read: a /metrics that fails, is slow or endless leaves the replica up
    # (before 2026-12-06 a /metrics slower than the timeout took a serving replica out) and its load
    # unknown: cleared as a down replica's are, so no figure read before it broke steers routing or holds a
    # gate shut (its KV capacity, the hardware's, is kept)
    text: bytes | None = None
    try:
        async with session.get(replica_id + "/metrics", timeout=timeout) as resp:
            if resp.status == 404:  # no such route (a server other than vLLM): a page saying nothing
                text = b""
            elif resp.status == 200:
                text = await read_capped(resp, MAX_PROBE_BYTES)
                if text is None:
                    log.warning(
                        "replica %s answered /metrics with over %d bytes: no load figures",
                        replica_id,
                        MAX_PROBE_BYTES,
                    )
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        log.debug("replica %s: /metrics not read (%r): no load figures", replica_id, e)
    if text is None:
        return ReplicaStats(replica_id, healthy=True, waiting=0, running=0, kv_usage=0.0)
    load = await read_load(text.decode("utf-8", "replace")) if text else {}
    capacity = load.get("kv_capacity_tokens")
    cpu_tier = load.get("cpu_kv_tier")
    usage = load.get("kv_usage")
    stats = ReplicaStats(
        replica_id,
        healthy=True,
        waiting=_count(load.get("waiting")),
        running=_count(load.get("running")),
        kv_usage=usage if usage is not None and math.isfinite(usage) else None,
        # for admission by KV working set; 0 (unknown) when the page has none: a replica restarted publishing
        # none kept the capacity it published before
        kv_capacity_tokens=0 if capacity is None else int(capacity),
        cpu_kv_tier=None if cpu_tier is None else cpu_tier > 0,
    )
    return stats


def _assumed_capacity(core: SchedulerCore, replica_id: str, guards: Guards) -> int:
    """For a replica up whose `/metrics` has not given a page yet: the smallest KV capacity among the other
    replicas whose own page gave theirs (0 when none is known). Unknown, its capacity is room for every
    waiting workflow to admission; its fleet's is the likeliest, and the smallest is the safe guess (before
    2026-12-06 such a replica was down until its page came, and a serving replica whose /metrics was slow
    from the start stayed out)."""
    known = [
        r.kv_capacity_tokens
        for r in core.replicas.values()
        if r.replica_id != replica_id and not guards[r.replica_id].capacity_assumed
    ]
    return min((c for c in known if c > 0), default=0)


def _count(value: float | None) -> int | None:
    """A number of requests as the replica reported it; None (unknown, as when it reports none) for NaN, an
    infinity or a negative figure. `int()` of the first two raised out of the probe and ended the health loop
    for every replica."""
    return int(value) if value is not None and 0 <= value < math.inf else None


def reported(stats: ReplicaStats, healthy: bool) -> ReplicaStats:
    """What the core is told after the guard had its say."""
    if not healthy:
        return down_stats(stats.replica_id)
    if not stats.healthy:  # a failed probe below the threshold: still up, load unknown
        return ReplicaStats(stats.replica_id, healthy=True)
    return stats


async def replica_health_loop(
    core: SchedulerCore,
    session: aiohttp.ClientSession,
    apply: Callable[[list[Decision]], None],
    interval_s: float,
    guards: Guards,
    timeout_s: float = 5.0,
    models: ReplicaModels | None = None,
    first_round: asyncio.Event | None = None,
    headers: Mapping[str, str] | None = None,
    on_down: Callable[[str], None] | None = None,
) -> None:
    """Probe every replica each `interval_s`, each on its own (a replica that does not answer delays no
    other's probes: with one round for all, a hung replica held every round to its timeout, so a restarted
    replica took 4.3 s to be routed to again instead of 0.2); follows the replica set every `interval_s`.
    `first_round` is set once every replica of the start has been probed once (health, load, KV capacity
    with the core). `on_down(replica)` is told, each probe, of a replica its guard holds down."""
    probing: dict[str, asyncio.Task[None]] = {}
    pages_read: set[str] = set()  # replicas a /metrics page of which was read (one without a capacity too)
    first = set(core.replicas)
    probed_once: Callable[[str], None] | None = None
    if first_round is not None:
        event = first_round

        def probed_once(replica_id: str) -> None:
            first.discard(replica_id)
            if not first:
                event.set()

        if not first:
            event.set()
    try:
        while True:
            for replica_id in core.replicas:
                if replica_id not in probing:
                    probing[replica_id] = asyncio.create_task(
                        _probe_replica(
                            core,
                            session,
                            apply,
                            replica_id,
                            interval_s,
                            guards,
                            timeout_s,
                            models,
                            headers,
                            probed_once,
                            on_down,
                            pages_read,
                        )
                    )
            for replica_id in [r for r in probing if r not in core.replicas]:
                probing.pop(replica_id).cancel()
                pages_read.discard(replica_id)
                if probed_once is not None and replica_id in first:
                    probed_once(replica_id)  # removed before its first probe: nothing to wait for
            for replica_id, task in list(probing.items()):
                if task.done():  # a defect that ended one replica's probing: logged, and it starts again
                    probing.pop(replica_id)
                    if not task.cancelled() and (error := task.exception()) is not None:
                        if not isinstance(error, Exception):
                            raise error
                        log.error("probing replica %s failed: %r", replica_id, error)
            if models is not None:
                models.keep_only(core.replicas)
            await asyncio.sleep(interval_s)
    finally:
        for task in probing.values():
            task.cancel()
        await asyncio.gather(*probing.values(), return_exceptions=True)


async def _probe_replica(
    core: SchedulerCore,
    session: aiohttp.ClientSession,
    apply: Callable[[list[Decision]], None],
    replica_id: str,
    interval_s: float,
    guards: Guards,
    timeout_s: float,
    models: ReplicaModels | None,
    headers: Mapping[str, str] | None,
    probed_once: Callable[[str], None] | None,
    on_down: Callable[[str], None] | None,
    pages_read: set[str],
) -> None:
    """One replica's probes, each `interval_s` after the last ended, and its models every few. `pages_read`:
    the replicas a /metrics page of which was read, shared by every replica's probes."""
    rounds = 0
    guard = guards[replica_id]  # (`capacity_assumed`: its capacity is the other replicas' smallest)
    while True:
        if models is not None and rounds % _MODELS_EVERY == 0:  # models change rarely: every few rounds
            try:
                found = await models_of(session, replica_id, timeout_s, headers)
            except Exception as e:  # a defect in one read, not the end of the probes
                log.error("reading replica %s's models failed: %r", replica_id, e)
                found = None
            if found is not None and replica_id in core.replicas:
                models.update(replica_id, found)
        rounds += 1
        try:
            stats, why = await probe_why(session, replica_id, timeout_s)
        except Exception as e:  # a defect in one probe fails that probe, not the loop
            log.error("probing replica %s failed: %r", replica_id, e)
            stats, why = ReplicaStats(replica_id, healthy=False), f"the probe failed: {e!r}"[:300]
        was = core.replicas.get(replica_id)
        if was is None:  # removed while it was probed
            return
        if stats.healthy and stats.kv_capacity_tokens is not None:
            pages_read.add(replica_id)
            guard.capacity_assumed = False
        held_down = False
        # taken again each probe while assumed: a smaller replica that joined, or another's page, lowers it
        unknown = was.kv_capacity_tokens <= 0 or guard.capacity_assumed
        if stats.healthy and replica_id not in pages_read and unknown:
            capacity = _assumed_capacity(core, replica_id, guards)
            if capacity:
                stats = msgspec.structs.replace(stats, kv_capacity_tokens=capacity)
                if not guard.capacity_assumed:
                    log.warning(
                        "replica %s: no /metrics page read yet; its KV capacity is taken as the smallest "
                        "of the other replicas' (%d tokens) until one is",
                        replica_id,
                        capacity,
                    )
                    guard.capacity_assumed = True
            # no capacity to take yet, but another replica's page may give one: held down meanwhile (up with
            # its capacity unknown, it would be room for every waiting workflow)
            held_down = not capacity and any(r != replica_id and r not in pages_read for r in core.replicas)
        if held_down:
            apply(core.replica_stats(down_stats(replica_id)))
        else:
            _apply_probe(core, guards, apply, on_down, was.healthy, stats, why)
        if probed_once is not None:
            probed_once(replica_id)
            probed_once = None
        await asyncio.sleep(interval_s)


def _apply_probe(
    core: SchedulerCore,
    guards: Guards,
    apply: Callable[[list[Decision]], None],
    on_down: Callable[[str], None] | None,
    was_healthy: bool,
    stats: ReplicaStats,
    why: str = "",
) -> None:
    """One probe through the replica's guard (thresholds, breaker) to the core; `why`: its failure."""
    replica_id, now = stats.replica_id, core.clock()
    guard = guards[replica_id]
    guard.probe(bool(stats.healthy), why)
    up = guard.healthy(now)
    healthy = up and replica_id not in core.draining
    if not up and on_down is not None:
        on_down(replica_id)
    if was_healthy != healthy:
        said = "" if healthy else f" (breaker {guard.breaker_state(now)}, probe ok: {stats.healthy})"
        if not healthy and guard.probe_error:
            said += f": {guard.probe_error}"
        log.warning("replica %s is now %s%s", replica_id, "up" if healthy else "down", said)
    apply(core.replica_stats(reported(stats, healthy)))
