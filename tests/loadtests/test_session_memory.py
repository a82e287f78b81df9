"""`python -m loadtests.bench.session_memory`: every call of every conversation is answered, and what the
proxy keeps per session is measured (the scheduler's session records; for a session it infers, also the
chain index that finds its conversation again)."""

from __future__ import annotations

from loadtests.bench.session_memory import measure


async def test_each_session_is_answered_and_an_inferred_one_keeps_more() -> None:
    named = await measure("saga", sessions=40, calls=4, tool_lines=5, anonymous=False)
    inferred = await measure("saga", sessions=40, calls=4, tool_lines=5, anonymous=True)
    for result in (named, inferred):
        assert result["answered"] == (20 + 40) * 4  # the warm-up's 20 conversations, then the measured ones
        assert result["bytes_per_session"] > 500  # a session leaves records behind
    assert inferred["bytes_per_session"] > named["bytes_per_session"]  # plus its conversation's chain
