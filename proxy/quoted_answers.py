"""A new conversation that quotes a session's latest answer continues that session: an agent compacting its
history (proxy/identity.py reads it when a conversation chains to no earlier answer).

Coding agents compact a history that fills the context by asking the model for a summary (a call that goes
on from the conversation) and starting again from it: Codex rebuilds the history as its opening, recent user
messages and a user message holding the summary; Claude Code sends a user message holding the summary's text.
The new conversation extends no earlier answer, so prefix chaining (proxy/session_chain.py) saw a new
session: it waited for admission as a new workflow (the call after a compaction p50 1.12-1.26 s against
0.13-0.14 s for agents naming their session) while the session it left held its reservation.

Contract (sans-IO): `remember(text, session, tag)` files the last `QUOTED_LINES` lines of at least
`QUOTED_LINE_CHARS` characters (stripped) of an answer of at least `QUOTED_ANSWER_CHARS`, as the session's
latest (an earlier answer's go; `file(session, answer_lines(text, tag))` when the lines were computed
already); `quoted(texts, tag)` is the session whose latest answer the texts quote:
the session most of whose filed lines they hold, at least `QUOTES_NEEDED` of them (all, when it filed
fewer); None when none, or when nothing is filed (no cost then); given `digests` (`quoted_lines`), it
hashes nothing again. A line is filed by its digest with the
`tag` (`quote_tag`: the tenant of client API keys and the conversation's system prompt), so only a
conversation of the same tenant starting again under the same system prompt, as a compacting agent does,
finds it: a reviewer agent given a coder's output is not taken for the coder. A line two sessions filed
(a boilerplate answer, one task sampled twice) names neither. `take_up(digests, busy, conversation)` is
`quoted` taken once (one compaction, one new conversation; a second quoting the same answer starts its
own, the same one sent again before its answer continues it); `forget(session)` drops a session's lines
(its next answer filed, or its end). At most `max_sessions` sessions are kept, the oldest first out."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from xxhash import xxh3_64_intdigest, xxh3_128_intdigest

QUOTED_ANSWER_CHARS = 200  # shorter answers are not summaries
QUOTED_LINE_CHARS = 32  # shorter lines (a heading, a blank, "Done.") say too little
QUOTED_LINES = 8  # an answer's last lines: a summary's, where the model thought aloud before it
QUOTES_NEEDED = 3
MAX_LINES_READ = 512  # of one new conversation, so a large first message costs little


def quote_tag(scope: str | None, system: bytes) -> str:
    """What a filed line is tagged with: the tenant of client API keys (None without) and the digest of the
    conversation's system prompt as sent (b"" for none)."""
    return f"{scope or ''}\x00{xxh3_64_intdigest(system):x}"


def _digest(tag: str, line: str) -> int:
    # 128 bits: also the key of the workers' shared table (proxy/response_owners.py `QuoteOwners`)
    return xxh3_128_intdigest(f"{tag}\x00{line}".encode())


def answer_lines(text: str, tag: str = "") -> list[int]:
    """The digests of what `remember` files of an answer: its last `QUOTED_LINES` long lines (none for a
    short answer)."""
    digests: list[int] = []
    if len(text) < QUOTED_ANSWER_CHARS:
        return digests
    for line in reversed(text.split("\n")):  # (as `quoted_lines` reads them)
        line = line.strip()
        if len(line) >= QUOTED_LINE_CHARS:
            digests.append(_digest(tag, line))
            if len(digests) == QUOTED_LINES:
                break
    return digests


def quoted_lines(texts: Iterable[str], tag: str = "") -> Iterator[int]:
    """The digests of the long lines of a new conversation's `texts`, the first `MAX_LINES_READ` lines only
    (not the whole of a large message)."""
    read = 0
    for text in texts:
        if read >= MAX_LINES_READ:
            return
        for line in text.split("\n", MAX_LINES_READ - read)[: MAX_LINES_READ - read]:
            read += 1
            line = line.strip()
            if len(line) >= QUOTED_LINE_CHARS:
                yield _digest(tag, line)


_SHARED = ""  # a line two sessions filed: it names neither


class QuotedAnswers:
    __slots__ = ("_by", "_lines", "_max_sessions", "_of", "taken")

    def __init__(self, max_sessions: int = 20_000) -> None:
        self._lines: dict[int, str] = {}  # a line's digest -> the session whose latest answer holds it
        self._of: dict[str, list[int]] = {}  # session -> its lines' digests, the oldest session first
        # a session taken up -> what the conversation that took it quoted (`take_up`); until its next answer
        self._by: dict[str, bytes] = {}
        self._max_sessions = max_sessions
        self.taken = 0  # conversations that took a session up (`/saga/v1/state`)

    def __len__(self) -> int:
        return len(self._of)

    def remember(self, text: str, session: str, tag: str = "") -> None:
        self.file(session, answer_lines(text, tag))

    def file(self, session: str, digests: list[int]) -> None:
        """Files an answer's `answer_lines` as the session's latest."""
        self.forget(session)
        if not digests:
            return
        while len(self._of) >= self._max_sessions:
            self.forget(next(iter(self._of)))
        self._of[session] = digests
        lines = self._lines
        if len(lines) > 2 * QUOTED_LINES * self._max_sessions:  # lines shared by sessions since gone
            self._lines = lines = {d: s for d, s in lines.items() if s != _SHARED}
        for digest in digests:
            held = lines.get(digest)
            lines[digest] = session if held is None or held == session else _SHARED

    def forget(self, session: str) -> None:
        lines = self._lines
        self._by.pop(session, None)
        for digest in self._of.pop(session, ()):
            if lines.get(digest) == session:
                del lines[digest]

    def quoted(self, texts: Iterable[str], tag: str = "", digests: Iterable[int] | None = None) -> str | None:
        """`digests`: `quoted_lines(texts, tag)`, when computed already."""
        if not self._of:
            return None
        lines = self._lines
        hits: dict[str, int] = {}
        for digest in quoted_lines(texts, tag) if digests is None else digests:
            session = lines.get(digest)
            if session:  # (not None, not shared)
                hits[session] = hits.get(session, 0) + 1
        best, most = None, 0
        for session, count in hits.items():
            if count > most:
                best, most = session, count
        if best is None or most < min(QUOTES_NEEDED, len(self._of[best])):
            return None
        return best

    def take_up(
        self, digests: list[int], busy: Callable[[str], bool] | None, conversation: bytes = b""
    ) -> str | None:
        """The session a new conversation quoting lines of these `digests` (`quoted_lines`) continues: the
        one `quoted` names, unless a call of it runs (`busy`: the quote is then another conversation's, a
        subagent given its parent's plan). Taken up once: another conversation
        quoting the same answer starts its own; the same `conversation` (a digest of all it sent) sent again
        before the session's next answer is filed (a client's retry after a timeout or a dropped stream:
        the attempt that took the session up was not answered, and its answer is the one filed next)
        continues it again."""
        session = self.quoted((), digests=digests)
        if session is None or (busy is not None and busy(session)):
            return None
        taken_by = self._by.get(session)
        if taken_by is None:
            self._by[session] = conversation
            self.taken += 1
        elif taken_by != conversation or not conversation:
            return None
        return session
