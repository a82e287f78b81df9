"""Carries out the retentions the policy gives up early (`SchedulerCore.take_releases`): `POST
{replica}/saga/v1/release {"session_id": ...}` on the replica that holds it (the retention contract,
docs/retention-api.md).

Contract: best effort, off the call's path. Each release is one background request with a short timeout; a
replica without the retention contract (404), one that is down or slow, loses nothing but the early release
(the retention then ends at its TTL, as if none was asked for). At most `MAX_IN_FLIGHT` releases are pending;
beyond that new ones are dropped and counted, so a stuck replica cannot grow the proxy's memory.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import msgspec

log = logging.getLogger("saga.proxy")

MAX_IN_FLIGHT = 256
TIMEOUT_S = 2.0
MAX_ANSWER_BYTES = 64 * 1024


class _Release(msgspec.Struct):
    session_id: str


class RetentionReleaser:
    def __init__(self, session: aiohttp.ClientSession, upstream_api_key: str | None) -> None:
        self.session = session
        self.headers = {"Content-Type": "application/json"}
        if upstream_api_key:
            self.headers["Authorization"] = f"Bearer {upstream_api_key}"
        self.pending: set[asyncio.Task[None]] = set()
        self.sent = 0
        self.dropped = 0  # not sent: too many pending
        self.failed = 0  # sent, not released (no contract, replica down, timeout)

    def release(self, releases: list[tuple[str, str]]) -> None:
        for session_id, replica_id in releases:
            if len(self.pending) >= MAX_IN_FLIGHT:
                self.dropped += 1
                continue
            task = asyncio.get_running_loop().create_task(self._post(replica_id, session_id))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)

    async def _post(self, replica_id: str, session_id: str) -> None:
        body = msgspec.json.encode(_Release(session_id))
        self.sent += 1
        try:
            async with self.session.post(
                replica_id + "/saga/v1/release",
                data=body,
                headers=self.headers,
                timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
            ) as resp:
                # read, so the connection is kept for the next release, but never more than an answer of
                # the contract can be: a replica (or what answers in its place) could send without end
                size = 0
                async for chunk in resp.content.iter_any():
                    size += len(chunk)
                    if size > MAX_ANSWER_BYTES:
                        self.failed += 1
                        return
                if resp.status != 200:
                    self.failed += 1
        except (TimeoutError, aiohttp.ClientError) as e:
            self.failed += 1
            log.debug("retention release on %s failed: %s", replica_id, e)

    async def close(self) -> None:
        for task in list(self.pending):
            task.cancel()
        await asyncio.gather(*self.pending, return_exceptions=True)
