"""Finding the replica that stored a Responses API response this proxy has no record of.

A call continuing through `previous_response_id` must go to the replica that stored that response: vLLM keeps
stored responses in its own memory (proxy/scheduler/types.py `RequestInfo.pinned_replica`). The proxy records
which replica answered each response (proxy/session_chain.py), but has no record after it restarted (a
rolling update), when another SAGA instance served the response, or once the record aged out. Then it asks
every healthy (or draining) replica at once with vLLM's retrieve route (`GET /v1/responses/{id}`, served
while the store is on) and pins the call to the one that answers 200, remembering it for the rest of the
chain.

Contract:
- `needs_lookup(app, fields, chains)`: the call names a response the proxy has no record of, and more than one
  replica serves (healthy or draining) to choose from (with one, the call goes there anyway).
- `find_holder(app, response_id)` returns the replica holding it, or "" when none answers 200 within
  `health_timeout_s` (the call is then routed as usual, and a replica answers vLLM's 404). It asks nothing for
  an id that is not plausible (`[A-Za-z0-9_-]`, at most 256 characters: nothing else goes into a URL), for
  one it found nowhere in the last `MISS_TTL_S`, or when `MAX_LOOKUPS` lookups are already under way (a
  client sending unknown ids cannot make the proxy send a request per replica for each of its calls). Each
  is counted in `saga_response_lookups_total{result}`: `found`, `missing` or `skipped`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict

import aiohttp
from aiohttp import web

from proxy import forward
from proxy.context import CONFIG, CORE, METRICS, UPSTREAM
from proxy.data_structs import CallFields
from proxy.session_chain import PrefixChains

MAX_LOOKUPS = 16  # lookups under way at once; past it a call is routed without one
MISS_TTL_S = 10.0  # an id found nowhere is not looked up again for this long
MAX_MISSES = 4096
PLAUSIBLE_ID = re.compile(r"[A-Za-z0-9_-]{1,256}")


class LookupState:
    def __init__(self) -> None:
        self.running = 0
        self.misses: OrderedDict[str, float] = OrderedDict()  # id -> when it was found nowhere


LOOKUP_STATE = web.AppKey("response_lookup", LookupState)


def needs_lookup(app: web.Application, fields: CallFields, chains: PrefixChains) -> bool:
    previous = fields.previous_response_id
    if not previous or chains.replica_of_response(previous):
        return False
    return len(app[CORE].serving()) > 1  # a draining replica still serves the chains it holds


async def find_holder(app: web.Application, response_id: str) -> str:
    state, lookups = app[LOOKUP_STATE], app[METRICS].response_lookups
    if not PLAUSIBLE_ID.fullmatch(response_id) or state.running >= MAX_LOOKUPS or _missed(state, response_id):
        lookups.bump("skipped")
        return ""
    config = app[CONFIG]
    session = app[UPSTREAM]
    headers: dict[str, str] = {}
    forward.upstream_auth(headers, config)
    replicas = app[CORE].serving()
    if not replicas:  # nothing to ask: not a miss to remember
        lookups.bump("skipped")
        return ""
    timeout = aiohttp.ClientTimeout(total=config.health_timeout_s)

    async def holds(replica: str) -> str:
        try:
            async with session.get(
                f"{replica}/v1/responses/{response_id}", headers=headers, timeout=timeout
            ) as r:
                return replica if r.status == 200 else ""
        except (aiohttp.ClientError, TimeoutError):
            return ""

    state.running += 1
    tasks = [asyncio.ensure_future(holds(replica)) for replica in replicas]
    holder = ""
    try:
        for finished in asyncio.as_completed(tasks):
            holder = await finished
            if holder:
                break
    finally:
        state.running -= 1
        for task in tasks:  # the rest, once one answered (or this call was cancelled)
            task.cancel()
    lookups.bump("found" if holder else "missing")
    if not holder:
        state.misses[response_id] = time.monotonic()
        while len(state.misses) > MAX_MISSES:
            state.misses.popitem(last=False)
    return holder


def _missed(state: LookupState, response_id: str) -> bool:
    at = state.misses.get(response_id)
    if at is None:
        return False
    if time.monotonic() - at < MISS_TTL_S:
        return True
    del state.misses[response_id]
    return False
