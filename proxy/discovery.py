"""Replica discovery by DNS, and the replica set changes the admin API asks for.

Contract: `discovered_urls(addresses, discovery)` turns resolved addresses into replica URLs (IPv6 in
brackets, sorted, duplicates dropped). `dns_discovery_loop` re-resolves `discovery.name` every `interval_s`:
new addresses become replicas, and those that vanished from `MISSES_TO_REMOVE` resolutions in a row are
removed from routing (their calls in flight still finish and are accounted for; one answer missing a pod is
no reason to drop its sessions' bindings). Discovery removes only the replicas it added: one the
configuration lists or the admin API added stays, whatever the name resolves to (and once the admin API
removes it, discovery does not bring it back while the name still lists it). It never undoes a drain:
a drained replica found again (in a restarted worker that replayed the drain, or after it stopped resolving
for a while) comes back drained. A replica removed through the admin API stays removed while its address
still resolves. A failed resolution changes nothing (a DNS hiccup must not empty the pool). The resolver is
injected, so tests resolve any name they like; by default it is the event loop's `getaddrinfo`.
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


# resolutions in a row a discovered replica must be missing from before it is removed
MISSES_TO_REMOVE = 2


class DiscoveredReplicas:
    """What discovery added and still answers for (module contract)."""

    def __init__(self, managed: set[str] | None = None) -> None:
        self.managed: set[str] = set() if managed is None else set(managed)  # added by discovery
        # listed replicas found in the set already (configured, added through the admin API): not
        # discovery's; one the admin API removes stays out while the name lists it
        self.others: set[str] = set()
        self.removed: set[str] = set()  # managed ones the admin API removed (added again: the admin API's)
        self.misses: dict[str, int] = {}  # replicas missing from the latest resolutions: how many
        self.drained: set[str] = set()  # managed replicas removed while drained: drained again if found

    def apply(self, core: SchedulerCore, guards: Guards, wanted: set[str]) -> None:
        """One resolution's replicas: adds the new ones, removes those missing long enough."""
        managed, others, drained = self.managed, self.others, self.drained
        for url in sorted(wanted):
            self.misses.pop(url, None)
            if url in managed:
                if url not in core.replicas:
                    self.removed.add(url)  # through the admin API: out while it still resolves
                elif url in self.removed:  # added again through the admin API: the admin API's now
                    self.removed.discard(url)
                    managed.discard(url)
                    others.add(url)
                continue
            if url in core.replicas:  # the configuration's, the admin API's: not discovery's to remove
                others.add(url)
                continue
            if url in others:  # removed through the admin API: out while it still resolves
                continue
            log.info("replica %s discovered", url)
            was_draining = url in core.draining or url in drained  # (a restarted worker replayed a drain)
            core.add_replica(url)
            if was_draining:
                core.draining.add(url)
                log.info("replica %s is still drained", url)
            drained.discard(url)
            managed.add(url)
        for url in sorted((managed | others) - wanted):
            missed = self.misses[url] = self.misses.get(url, 0) + 1
            if missed < MISSES_TO_REMOVE:
                continue
            del self.misses[url]
            if url in others:  # not discovery's: forgotten (listed again later, it is found anew)
                others.discard(url)
                continue
            log.warning("replica %s no longer resolves: removed from routing", url)
            if url in core.draining:
                drained.add(url)
            core.remove_replica(url)
            guards.forget(url)
            managed.discard(url)
            self.removed.discard(url)
        for url in [u for u in drained if u in core.replicas]:  # added again by the admin API: its call
            drained.discard(url)


async def dns_discovery_loop(
    core: SchedulerCore,
    guards: Guards,
    discovery: DnsDiscovery,
    resolve: Resolver = resolve_with_getaddrinfo,
    managed: set[str] | None = None,
) -> None:
    """`managed`: replicas to treat as added by discovery already (a restarted worker's admin-removed ones,
    which a resolution must not bring back while they still resolve, as in the workers that removed them)."""
    found = DiscoveredReplicas(managed)
    while True:
        try:
            addresses = await resolve(discovery.name, discovery.port)
        except (OSError, ValueError) as e:
            log.warning("resolving %s failed, keeping %d replicas: %s", discovery.name, len(found.managed), e)
        else:
            try:
                found.apply(core, guards, set(discovered_urls(addresses, discovery)))
            except ValueError as e:  # not an IP address: a resolver bug
                log.warning("resolver gave a bad address for %s: %s", discovery.name, e)
        await asyncio.sleep(discovery.interval_s)
