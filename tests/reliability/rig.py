"""Shared helpers for the reliability tests: a proxy in this process in front of an in-process simulated
fleet, over loopback, with short timeouts, and the checks every fault test ends with (nothing left in
flight, no leaked asyncio tasks)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from proxy.config import ProxyConfig
from proxy.server import running_proxy
from simulator.server import ReplicaFleet, start_fleet

MODEL = "saga-sim"
FIRST_BYTE_S = 2.0
IDLE_S = 2.0
HEALTH_S = 0.3
# A hang detector, not a speed assertion: far above every configured timeout, far below pytest's timeout.
CLIENT_BOUND_S = 30.0


def messages(session: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"task for {session}: " + "word " * 40}]


@dataclass
class Rig:
    fleet: ReplicaFleet
    url: str
    http: aiohttp.ClientSession

    async def chat(
        self,
        session: str,
        *,
        stream: bool = False,
        max_tokens: int = 8,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any], str]:
        """One call, bounded by CLIENT_BOUND_S; (status, JSON body or {"events": [...]}, replica)."""
        body = {"model": MODEL, "messages": messages(session), "max_tokens": max_tokens, "stream": stream}
        hdrs = {"X-Session-ID": session, **(headers or {})}
        async with (
            asyncio.timeout(CLIENT_BOUND_S),
            self.http.post(f"{self.url}/v1/chat/completions", json=body, headers=hdrs) as r,
        ):
            replica = r.headers.get("X-Saga-Replica", "")
            if stream and r.status == 200:
                raw = await r.read()
                events = [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]
                return r.status, {"events": events}, replica
            return r.status, await r.json(), replica

    async def state(self) -> dict[str, Any]:
        async with self.http.get(f"{self.url}/saga/v1/state") as r:
            result: dict[str, Any] = await r.json()
            return result

    async def replica_views(self) -> dict[str, dict[str, Any]]:
        async with self.http.get(f"{self.url}/saga/v1/replicas") as r:
            return {v["replica_id"]: v for v in (await r.json())["replicas"]}

    async def set_fault(self, replica: str, **fault: Any) -> None:
        async with self.http.post(f"{replica}/saga/v1/faults", json=fault) as r:
            assert r.status == 200, await r.text()

    async def clear_fault(self, replica: str) -> None:
        async with self.http.delete(f"{replica}/saga/v1/faults") as r:
            assert r.status == 200

    async def session_on(self, replica: str) -> str:
        """A session id that the proxy placed on `replica` (after one successful call)."""
        for i in range(60):
            status, _, where = await self.chat(f"find-{i}")
            assert status == 200
            if where == replica:
                return f"find-{i}"
        raise AssertionError(f"no session was ever placed on {replica}")

    async def until(self, predicate: Any, rounds: int = 400) -> bool:
        """A bounded wait for background loops (health probes), not a timing assertion."""
        for _ in range(rounds):
            if await predicate():
                return True
            await asyncio.sleep(0.05)
        return False

    async def settled(self) -> dict[str, Any]:
        """Waits (bounded) until nothing is in flight in the proxy's core, and returns the state."""
        state: dict[str, Any] = {}

        async def idle() -> bool:
            nonlocal state
            state = await self.state()
            return state["in_flight"] == 0 and all(r["in_flight"] == 0 for r in state["replicas"])

        await self.until(idle)
        return state


def is_openai_error(payload: dict[str, Any]) -> bool:
    error = payload.get("error")
    return isinstance(error, dict) and isinstance(error.get("message"), str) and "type" in error


def stream_ok_or_clear_error(events: list[str]) -> bool:
    """A streamed answer either ends with [DONE] or with an OpenAI-style error event."""
    if not events:
        return False
    if events[-1] == "[DONE]":
        return True
    return is_openai_error(json.loads(events[-1]))


def task_count() -> int:
    """asyncio tasks in this process, leaving out aiohttp's one task per open keep-alive connection (bounded
    by the client and upstream connection pools, closed after the keep-alive timeout): what is left are
    handlers, relays, retries and background loops, which must return to their baseline."""
    return sum(
        getattr(t.get_coro(), "__qualname__", "") != "RequestHandler.start" for t in asyncio.all_tasks()
    )


@contextlib.asynccontextmanager
async def rig(replicas: int = 3, **overrides: Any) -> AsyncIterator[Rig]:
    fleet = await start_fleet(replicas, time_scale=150.0)
    settings: dict[str, Any] = {
        "port": 0,
        "seed": 1,
        "first_byte_timeout_s": FIRST_BYTE_S,
        "stream_idle_timeout_s": IDLE_S,
        "health_interval_s": HEALTH_S,
        "health_timeout_s": 1.0,
        "connect_timeout_s": 1.0,
        "breaker_failures": 2,
        "breaker_cooldown_s": 1.0,
        "access_log": False,
        **overrides,
    }
    config = ProxyConfig(replicas=list(fleet.urls), **settings)
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http,
            running_proxy(config) as url,
        ):
            yield Rig(fleet, url, http)
    finally:
        await fleet.close()
