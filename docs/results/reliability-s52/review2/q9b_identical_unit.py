# ruff: noqa
"""Sans-IO: two sessions whose latest answers are identical (boilerplate / one task sampled twice), and one
whose answer is a single 200+-char line. Which session does a quoting conversation get?"""

import sys

sys.path.insert(0, sys.argv[1])
from proxy.quoted_answers import QuotedAnswers

q = QuotedAnswers()
text = "\n".join(f"- step {k}: updated the parser and ran the full test suite again" for k in range(8))
q.remember(text, "A")
q.remember(text, "B")
print("A quotes its own summary ->", q.quoted(["Summary:\n" + text]))
q.forget("B")
print("after B taken up, B quotes its own ->", q.quoted(["Summary:\n" + text]))
one = "I could not complete the task because the repository does not contain a tests directory, " * 3
q.remember(one, "C")
print(
    "a new agent whose prompt merely contains C's one-line answer ->",
    q.quoted(["Please handle this report from the user: " + one.strip()]),
)
