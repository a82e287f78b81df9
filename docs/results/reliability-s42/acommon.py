import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import chat, replicas


def set_hosts(name, ips):
    with open("/etc/hosts", "w") as f:  # in place: the bind mount keeps the inode
        f.write("127.0.0.1 localhost\n" + "".join(f"{ip} {name}\n" for ip in ips))


def calls(base, n, prefix, timeout=10):
    hits = collections.Counter()
    for i in range(n):
        s, _dt, _body, hd = chat(base, sid=f"{prefix}-{i}", timeout=timeout)
        hits[hd.get("X-Fake", str(s)) if s == 200 else str(s)] += 1
    return dict(hits)


def rows(base):
    return {r["replica_id"]: r for r in replicas(base)}


def brief(base):
    return {u: {"healthy": r["healthy"], "draining": r["draining"]} for u, r in rows(base).items()}
