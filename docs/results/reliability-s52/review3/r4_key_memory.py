# ruff: noqa
"""Sans-IO: memory of CacheKeyConversations when K keys each carry 1024 conversations (an app with one key per user,
its users' conversations overlapping). Extrapolates to the 65,536-key limit. args: tree K"""

import sys, os, resource

sys.path.insert(0, sys.argv[1])
from proxy.cache_key_conversations import CacheKeyConversations, Opening

K = int(sys.argv[2])


def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


c = CacheKeyConversations()
r0 = rss()
for k in range(K):
    key = f"user-{k}"
    c.session_for(key, lambda: Opening(0, True), lambda s: False, lambda s: True)
    for j in range(1, 1025):
        c.session_for(
            key, lambda j=j: Opening(j * 7919 + k * 1_000_003 + 2**40, True), lambda s: True, lambda s: True
        )
r1 = rss()
print(
    f"{K} keys x 1024 conversations: +{r1 - r0:.1f} MiB; per key {(r1 - r0) / K * 1024:.1f} KiB; at 65,536 keys ~{(r1 - r0) / K * 65536 / 1024:.2f} GiB; compiled: {CacheKeyConversations.__module__} {sys.modules['proxy.cache_key_conversations'].__file__}"
)
