# ruff: noqa
"""Memory bound of QuotedAnswers._by (6eb37e8): file N sessions (max_sessions M), each taken up by its own
conversation, no further answers; then N more filed. DEFECT if len(_by) > len(_of) or > M."""

import sys, os

sys.path.insert(0, os.getcwd())
from proxy.quoted_answers import QuotedAnswers, answer_lines

M = 1000
q = QuotedAnswers(max_sessions=M)


def ans(i):
    return "\n".join(f"line {k} of session {i}'s summary, long enough to be filed" for k in range(8))


for i in range(3 * M):
    q.file(f"s{i}", answer_lines(ans(i)))
    s = q.take_up([ans(i)], "", None, None, f"conv{i}".encode())
    assert s == f"s{i}", s
print("after 3M take-ups: _of", len(q._of), "_by", len(q._by), "_lines", len(q._lines))
ok = len(q._by) <= len(q._of) <= M
print("OK" if ok else "DEFECT", "_by bounded by max_sessions:", len(q._by), "<=", M)
# same conversation again / another conversation
q2 = QuotedAnswers()
q2.file("S", answer_lines(ans(1)))
print(
    "take",
    q2.take_up([ans(1)], "", None, None, b"C"),
    "again same",
    q2.take_up([ans(1)], "", None, None, b"C"),
    "other",
    q2.take_up(["Review:\n" + ans(1)], "", None, None, b"D"),
    "empty conv twice",
    QuotedAnswers().take_up([], "", None, None, b""),
)
