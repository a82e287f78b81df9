"""A new conversation quoting a session's latest answer continues it (proxy/quoted_answers.py), sans-IO."""

from __future__ import annotations

from proxy.quoted_answers import MAX_LINES_READ, QUOTED_LINES, QuotedAnswers, quote_tag, quoted_lines

SUMMARY = "\n".join(
    [
        "<analysis>I looked at the failing test first and then at the parser.</analysis>",
        "## Summary",
        *(
            f"{n}. The parser drops the last field when line {n} ends with a comma; fixed in io.py."
            for n in range(10)
        ),
    ]
)


def test_a_conversation_quoting_a_sessions_latest_answer_is_that_session() -> None:
    quotes = QuotedAnswers()
    quotes.remember(SUMMARY, "s1")
    note = "This session continues an earlier one. Its summary:\n" + SUMMARY.split("## Summary\n")[1]
    assert quotes.quoted(["Go on from there.", note]) == "s1"
    assert quotes.quoted(["a new task: " + "words " * 100]) is None


def test_its_last_lines_are_filed_and_a_few_of_them_are_enough() -> None:
    quotes = QuotedAnswers()
    quotes.remember(SUMMARY, "s1")
    lines = SUMMARY.splitlines()
    assert quotes.quoted(["\n".join(lines[-3:])]) == "s1"  # three of its last lines, reformatted around
    assert quotes.quoted(["\n".join(lines[-2:])]) is None  # two: not enough
    assert quotes.quoted(["\n".join(lines[:-QUOTED_LINES])]) is None  # its earlier lines are not filed
    assert quotes.quoted(["   " + "\n\n".join(line.strip() for line in lines[-4:])]) == "s1"  # spaces aside


def test_short_answers_and_short_lines_are_not_filed() -> None:
    quotes = QuotedAnswers()
    quotes.remember("Done. The tests pass now and nothing else is left.", "s1")
    assert len(quotes) == 0
    quotes.remember("ok\n" * 200, "s2")  # long, but every line short
    assert len(quotes) == 0
    assert quotes.quoted(["Done. The tests pass now and nothing else is left."]) is None


def test_a_single_long_line_answer_is_found_by_that_line() -> None:
    answer = "word " * 60
    quotes = QuotedAnswers()
    quotes.remember(answer, "s1")
    assert quotes.quoted([f"Summary so far: \n{answer}\nGo on."]) == "s1"


def test_only_a_sessions_latest_answer_counts() -> None:
    quotes = QuotedAnswers()
    quotes.remember(SUMMARY, "s1")
    quotes.remember(
        "\n".join(f"A newer answer, line {n}, long enough to be filed here." for n in range(9)), "s1"
    )
    assert quotes.quoted([SUMMARY]) is None
    assert len(quotes) == 1


def test_only_the_same_tenant_under_the_same_system_prompt_finds_it() -> None:
    """A compacting agent keeps its system prompt; a reviewer agent given a coder's output has its own, and
    another tenant (client API keys) never finds this one's sessions."""
    quotes = QuotedAnswers()
    coder = quote_tag("tenant-a", b'"You code."')
    quotes.remember(SUMMARY, "s1", coder)
    assert quotes.quoted([SUMMARY], quote_tag("tenant-b", b'"You code."')) is None
    assert quotes.quoted([SUMMARY], quote_tag("tenant-a", b'"You review code."')) is None
    assert quotes.quoted([SUMMARY], quote_tag(None, b'"You code."')) is None
    assert quotes.quoted([SUMMARY], coder) == "s1"


def test_a_line_two_sessions_filed_names_neither() -> None:
    """Two agents answering alike (a boilerplate answer, one task sampled twice): the later took the earlier's
    compaction, and its own then found nothing (the fifty-second session's second review)."""
    quotes = QuotedAnswers()
    quotes.remember(SUMMARY, "a")
    quotes.remember(SUMMARY, "b")
    assert quotes.quoted([SUMMARY]) is None
    quotes.remember(SUMMARY + "\nOne more line that only session b wrote in its answer.", "b")
    assert quotes.quoted([SUMMARY]) is None  # its other lines still shared with a
    quotes.forget("a")
    quotes.remember(SUMMARY, "c")  # a third files them: shared still
    assert quotes.quoted([SUMMARY]) is None


def test_forgetting_a_session_and_the_oldest_first_out() -> None:
    quotes = QuotedAnswers(max_sessions=2)
    for n in range(3):
        quotes.remember(SUMMARY.replace("parser", f"parser {n}"), f"s{n}")
    assert len(quotes) == 2
    assert quotes.quoted([SUMMARY.replace("parser", "parser 0")]) is None
    assert quotes.quoted([SUMMARY.replace("parser", "parser 2")]) == "s2"
    quotes.forget("s2")
    assert quotes.quoted([SUMMARY.replace("parser", "parser 2")]) is None


def test_a_long_first_message_is_read_only_so_far() -> None:
    quotes = QuotedAnswers()
    quotes.remember(SUMMARY, "s1")
    padding = "\n".join(f"a line of a large file, number {n}" for n in range(MAX_LINES_READ))
    assert quotes.quoted([padding, SUMMARY]) is None
    assert quotes.quoted([SUMMARY, padding]) == "s1"


def test_the_lines_hashed_by_the_worker_that_read_the_call_are_not_hashed_again() -> None:
    """`--workers N`: the worker that read a first call hashed its lines to look them up in the workers'
    table (proxy/fast_server.py); the same digests give the same answer."""
    quotes = QuotedAnswers()
    quotes.remember(SUMMARY, "s1", "t")
    for texts in (["Go on from:\n" + SUMMARY], ["a new task: " + "words " * 100]):
        digests = list(quoted_lines(texts, "t"))
        assert quotes.quoted((), "t", digests) == quotes.quoted(texts, "t")
    assert quotes.quoted((), "t", list(quoted_lines([SUMMARY], "t"))) == "s1"


def test_a_session_is_taken_up_once_by_one_conversation_and_again_by_its_retry() -> None:
    quotes = QuotedAnswers()
    quotes.remember(SUMMARY, "s1", "t")
    again = ["Earlier work:\n" + SUMMARY]

    def lines(texts: list[str]) -> list[int]:
        return list(quoted_lines(texts, "t"))

    assert quotes.take_up(lines(again), lambda s: True, b"c1") is None  # a call of s1 runs: not taken
    assert quotes.take_up(lines(again), None, b"c1") == "s1" and quotes.taken == 1
    assert quotes.take_up(lines(again), None, b"c1") == "s1" and quotes.taken == 1  # the same, again
    assert quotes.take_up(lines(["Review:\n" + SUMMARY]), None, b"c2") is None  # another conversation
    quotes.remember("\n".join(f"the next answer of s1, line {n}, long enough" for n in range(8)), "s1", "t")
    assert quotes.take_up(lines(again), None, b"c1") is None  # the session went on: its old answer gone
