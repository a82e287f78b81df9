# ruff: noqa
"""What the workers' quote table costs a call (fifty-third session; proxy/response_owners.py `QuoteOwners`,
pure Python in every build): an agent's answer records its lines (their digests are computed once, for the
table and the in-process index alike); a first call reads one word when nothing was ever filed (one-shot
traffic), a tag lookup when lines were filed but not under its tag, and looks up each long line when they
were. Best of 5 repeats. Usage: python3 docs/results/reliability-s53/record_cost.py"""

import tempfile, timeit

from proxy.quoted_answers import answer_lines, quoted_lines
from proxy.response_owners import ChainOwners, QuoteOwners

filed = QuoteOwners(tempfile.mkdtemp(), 0, 2)
chains = ChainOwners(tempfile.mkdtemp(), 0)
empty = QuoteOwners(tempfile.mkdtemp(), 0, 2)
answer = "\n".join(f"line {i} of the answer that is long enough to be filed here ok" for i in range(20))
lines = answer_lines(answer, "t")
filed.record("t", lines)
first_20 = list(quoted_lines([answer.replace("answer", "question")], "t"))
first_512 = list(
    quoted_lines(["\n".join(f"line {i} of a large first message, long enough" for i in range(600))], "t")
)


def best(f, n):
    return min(timeit.repeat(f, number=n, repeat=5)) / n * 1e6


for name, f, n in (
    ("answer_lines (computed before the change too)", lambda: answer_lines(answer, "t"), 50_000),
    ("QuoteOwners.record, per answer (new)", lambda: filed.record("t", lines), 50_000),
    (
        "ChainOwners.record, per answer (for scale: there before)",
        lambda: chains.record(b"0123456789abcdef"),
        50_000,
    ),
    ("QuoteOwners.anything_filed, nothing filed (per first call)", empty.anything_filed, 200_000),
    (
        "QuoteOwners.filed, a tag nobody filed under (per first call once anything was)",
        lambda: filed.filed("u"),
        50_000,
    ),
    (f"QuoteOwners.claim, {len(first_20)} long lines, none filed", lambda: filed.claim(first_20), 5_000),
    (f"QuoteOwners.claim, {len(first_512)} long lines, none filed", lambda: filed.claim(first_512), 200),
):
    print(f"{name}: {best(f, n):.2f} us")
