"""The workers' tables of which worker served a Responses API answer, a chat answer, and filed a compacting
agent's summary (proxy/response_owners.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.data_structs import Answer, ChatMessage
from proxy.quoted_answers import answer_lines, quote_tag, quoted_lines
from proxy.response_owners import WAYS, ChainOwners, QuoteOwners, ResponseOwners
from proxy.session_chain import answer_key, chain_of


def test_a_response_recorded_by_one_worker_is_found_by_the_others(tmp_path: Path) -> None:
    workers = [ResponseOwners(str(tmp_path), i, slots=1024) for i in range(3)]
    workers[2].record("resp_abc")
    workers[0].record("resp_def")
    assert [w.owner("resp_abc") for w in workers] == [2, 2, 2]
    assert [w.owner("resp_def") for w in workers] == [0, 0, 0]
    assert workers[1].owner("resp_never_served") == -1
    assert (tmp_path / "responses.table").stat().st_mode & 0o777 == 0o600
    for w in workers:
        w.close()


def test_a_later_response_in_the_same_slot_takes_it(tmp_path: Path) -> None:
    one, two = ResponseOwners(str(tmp_path), 1, slots=1), ResponseOwners(str(tmp_path), 2, slots=1)
    one.record("resp_old")
    two.record("resp_new")
    assert one.owner("resp_old") == -1  # lost, not misattributed to worker 2
    assert one.owner("resp_new") == 2
    one.close()
    two.close()


def test_the_table_outlives_a_worker_restarted_at_its_index(tmp_path: Path) -> None:
    before = ResponseOwners(str(tmp_path), 255, slots=64)
    before.record("resp_1")
    before.close()
    after = ResponseOwners(str(tmp_path), 255, slots=64)
    assert after.owner("resp_1") == 255
    after.close()


@pytest.mark.parametrize(("index", "slots"), [(-1, 8), (512, 8), (0, 0)])
def test_out_of_range_tables_are_refused(tmp_path: Path, index: int, slots: int) -> None:
    with pytest.raises(ValueError, match="response owners"):
        ResponseOwners(str(tmp_path), index, slots=slots)


@given(st.lists(st.tuples(st.text(min_size=1, max_size=40), st.integers(0, 3)), max_size=40))
def test_an_owner_found_is_the_last_worker_that_recorded_that_response(
    tmp_path_factory: pytest.TempPathFactory, served: list[tuple[str, int]]
) -> None:
    directory = str(tmp_path_factory.mktemp("owners"))
    workers = [ResponseOwners(directory, i, slots=16) for i in range(4)]  # few slots: collisions happen
    last: dict[str, int] = {}
    for response_id, worker in served:
        workers[worker].record(response_id)
        last[response_id] = worker
    for response_id, worker in last.items():
        assert workers[0].owner(response_id) in (-1, worker)
    if served:  # the very last record is never lost
        assert workers[3].owner(served[-1][0]) == served[-1][1]
    for w in workers:
        w.close()


def test_any_string_a_client_names_is_looked_up_without_error(tmp_path: Path) -> None:
    """`previous_response_id` comes from the client: control characters, a lone surrogate (valid JSON
    `\\ud800`), a megabyte are hashed like any id, found only if recorded."""
    owners = ResponseOwners(str(tmp_path), 1, slots=1024)
    odd = ["resp_\r\n\x00", "resp_\ud800", "r" * 1_000_000, ""]
    assert [owners.owner(i) for i in odd] == [-1, -1, -1, -1]
    owners.record("resp_\ud800")
    assert owners.owner("resp_\ud800") == 1 and owners.owner("resp_\udc00") == -1
    owners.close()


def test_a_chain_key_recorded_by_one_worker_is_found_by_the_others(tmp_path: Path) -> None:
    """The chat table: a conversation's latest answer, by its prefix-chain key (a 16-byte digest)."""
    workers = [ChainOwners(str(tmp_path), i, slots=1024) for i in range(2)]
    opening = chain_of([ChatMessage("user", "task")])[0][-1]
    answer = answer_key(opening, Answer("a plan"))
    workers[1].record(answer)
    assert [w.owner(answer) for w in workers] == [1, 1]
    assert workers[0].owner(answer_key(opening, Answer("another plan"))) == -1
    assert (tmp_path / "chains.table").exists() and not (tmp_path / "responses.table").exists()
    with pytest.raises(ValueError, match="chain owners"):
        ChainOwners(str(tmp_path), 512)
    for w in workers:
        w.close()


def test_where_a_conversation_was_sent_is_found_by_every_worker_apart_from_the_answers(
    tmp_path: Path,
) -> None:
    """`record_sent`: the worker that read a compacting agent's first call names the worker it sent it to
    (not itself), for the same call sent again; kept apart from the answers' keys in the same table."""
    workers = [ChainOwners(str(tmp_path), i, slots=1024) for i in range(3)]
    conversation = chain_of([ChatMessage("user", "Earlier work, summarized: ...")])[0][-1]
    assert [w.sent_to(conversation) for w in workers] == [-1, -1, -1]
    workers[0].record_sent(conversation, 2)
    assert [w.sent_to(conversation) for w in workers] == [2, 2, 2]
    assert workers[1].owner(conversation) == -1  # not an answer's key
    other = chain_of([ChatMessage("user", "Another summary")])[0][-1]
    assert workers[1].sent_to(other) == -1
    for w in workers:
        w.close()


def test_an_entry_is_pushed_out_only_by_a_full_bucket_of_later_keys(tmp_path: Path) -> None:
    """Buckets of `WAYS` slots, the one written longest ago taken first: a conversation's entry survives
    until `WAYS` later keys fell in its bucket (a direct-mapped table lost it to any one)."""
    one, two = ChainOwners(str(tmp_path), 0, slots=2 * WAYS), ChainOwners(str(tmp_path), 1, slots=2 * WAYS)

    def key(n: int) -> bytes:  # an even first word: bucket 0 of 2; a tag of its own
        return (2 * n).to_bytes(8, "little") + ((n + 1) << 32).to_bytes(8, "little")

    one.record(key(0))
    for n in range(1, WAYS):
        two.record(key(n))
    assert [one.owner(key(n)) for n in range(WAYS)] == [0] + [1] * (WAYS - 1)
    one.record(key(0))  # written again: its own slot, now the newest
    two.record(key(WAYS))  # a full bucket: the oldest (key 1) goes
    assert one.owner(key(0)) == 0 and one.owner(key(1)) == -1
    assert [one.owner(key(n)) for n in range(2, WAYS + 1)] == [1] * (WAYS - 1)
    one.close()
    two.close()


SUMMARY = "\n".join(
    f"{n}. The parser dropped the last field of row {n}; fixed in io.py and tested." for n in range(6)
)


def test_a_conversation_quoting_a_summary_finds_the_worker_that_filed_it(tmp_path: Path) -> None:
    """`--workers N`: the new conversation of an agent that compacted its history goes to the worker whose
    session filed the summary, once (the entries it was found by are cleared: the next conversation quoting
    it, an orchestrator's plan handed to many subagents, stays where it was read); one quoting it under
    another system prompt or tenant, or quoting nothing filed, finds none."""
    workers = [QuoteOwners(str(tmp_path), i, 2, slots=1024) for i in range(2)]
    tag = quote_tag(None, b"You are a coding agent.")
    assert not workers[0].filed(tag) and not workers[0].anything_filed()
    workers[1].record(tag, [])  # an answer filing no line (short, or short lines): nothing recorded
    assert not workers[0].anything_filed()
    workers[1].record(tag, answer_lines(SUMMARY, tag))
    workers[0].record(
        tag, answer_lines("\n".join(f"another agent's answer, line {n} of it" for n in range(9)), tag)
    )
    assert workers[0].anything_filed() and workers[0].filed(tag) and workers[1].filed(tag)

    def lines(*texts: str, under: str = tag) -> list[int]:
        return list(quoted_lines(texts, under))

    quoting = ("Fix the parser.", f"Earlier work, summarized:\n{SUMMARY}\nGo on from there.")
    other_tags = (quote_tag(None, b"You are a reviewer."), quote_tag("tenant-b", b"You are a coding agent."))
    assert [w.filed(t) for w in workers for t in other_tags] == [False] * 4
    assert workers[0].claim(lines(*quoting, under=other_tags[0])) == -1
    assert workers[0].claim(lines("a new task, nothing quoted: " + "words " * 40)) == -1
    # the summary's first lines only: its end (what the table holds) is not there
    assert workers[0].claim(lines("\n".join(SUMMARY.splitlines()[:3]))) == -1
    # its last two lines: fewer than the in-process look needs, so nothing is claimed (the third review: a
    # side call quoting them took the entries, and the compaction after it was served where it was read)
    assert workers[0].claim(lines("Check these:\n" + "\n".join(SUMMARY.splitlines()[-2:]))) == -1
    # the summary, then thirty long lines of a file in the same message (the third review: looking up only a
    # text's last lines missed it)
    attached = "\n".join(f"    return parse_row(line, {n}, strict=True)  # a file's line" for n in range(30))
    assert workers[0].claim(lines(f"{SUMMARY}\n<file>\n{attached}\n</file>")) == 1
    assert workers[1].claim(lines(*quoting)) == -1  # claimed once
    workers[1].record(tag, answer_lines(SUMMARY, tag))  # filed again (the same answer, later)
    assert workers[1].claim(lines(*quoting)) == 1
    # an answer of one long line: that line is enough, as in one process
    one_line = "word " * 60
    workers[0].record(tag, answer_lines(one_line, tag))
    assert workers[1].claim(lines(f"Summary so far:\n{one_line}\nGo on.")) == 0
    assert (tmp_path / "quotes.table").exists()
    for w in workers:
        w.close()
