# ruff: noqa
"""QuotedAnswers memory: file N sessions' long answers (8 lines of 60 chars each); RSS growth."""

import sys, resource, os

sys.path.insert(0, sys.argv[1])
from proxy.quoted_answers import QuotedAnswers


def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


q = QuotedAnswers()
base = rss()
for n in (5_000, 20_000, 100_000):
    for i in range(n):
        q.remember("\n".join(f"answer {i} line {k} " + "z" * 50 for k in range(12)), f"conv-{i:016x}")
    print(f"after {n} answers: sessions kept {len(q)}, RSS +{rss() - base:.1f} MiB")
