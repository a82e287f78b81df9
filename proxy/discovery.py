"""Replica discovery by DNS, and the replica set changes the admin API asks for.

Contract: `discovered_urls(addresses, discovery)` turns resolved addresses into replica URLs (IPv6 in
brackets, sorted, duplicates dropped). `dns_discovery_loop` re-resolves `discovery.name` every `interval_s`:
new addresses become replicas, vanished ones are removed from routing (their calls in flight still finish and
are accounted for). A replica removed through the admin API stays removed while its address still resolves.
A failed resolution changes nothing (a DNS hiccup must not empty the pool). The resolver is injected, so tests
resolve any name they like; by default it is the event loop's `getaddrinfo`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable

from proxy.config import DnsDiscovery
from proxy.context import Guards
from proxy.scheduler import SchedulerCore

log = logging.getLogger("saga.discovery")

Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve_with_getaddrinfo(name: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(name, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def discovered_urls(addresses: list[str], discovery: DnsDiscovery) -> list[str]:
    urls = set()
    for address in addresses:
        host = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
        urls.add(f"{discovery.scheme}://{host}:{discovery.port}")
    return sorted(urls)


def apply_replica_set(core: SchedulerCore, guards: Guards, wanted: set[str], managed: set[str]) -> set[str]:
    """Adds the wanted replicas and removes the managed ones no longer wanted; returns the new managed set."""
    for url in sorted(wanted - managed):
        log.info("replica %s discovered", url)
        core.add_replica(url)
    for url in sorted(managed - wanted):
        log.warning("replica %s no longer resolves: removed from routing", url)
        core.remove_replica(url)
        guards.forget(url)
    return set(wanted)


async def dns_discovery_loop(
    core: SchedulerCore,
    guards: Guards,
    discovery: DnsDiscovery,
    resolve: Resolver = resolve_with_getaddrinfo,
    managed: set[str] | None = None,
) -> None:
    """`managed`: replicas to treat as added by discovery already (a restarted worker's admin-removed ones,
    which a resolution must not bring back while they still resolve, as in the workers that removed them)."""
    managed = set() if managed is None else set(managed)
    while True:
        try:
            addresses = await resolve(discovery.name, discovery.port)
        except (OSError, ValueError) as e:
            log.warning("resolving %s failed, keeping %d replicas: %s", discovery.name, len(managed), e)
        else:
            try:
                managed = apply_replica_set(core, guards, set(discovered_urls(addresses, discovery)), managed)
            except ValueError as e:  # not an IP address: a resolver bug
                log.warning("resolver gave a bad address for %s: %s", discovery.name, e)
        await asyncio.sleep(discovery.interval_s)
