"""The simulated model's output words, drawn a whole plan at a time (`Tokenizer.generate_ids`).

Contract: `SentenceIds(pieces, period, comma).ids(seed, n)` is the first `n` ids of an endless text, a pure
function of the arguments, defined by this one-word-at-a-time loop (kept as `reference_sentence_ids`, which
tests compare against):

- a xorshift64* stream: the state starts at `seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E5F` (mod 2**64)
  and each iteration advances it (`s ^= s >> 12; s ^= s << 25; s ^= s >> 27`) and draws
  `r = s * 0x2545F4914F6CDD1D` (mod 2**64);
- a sentence starts with `5 + (r >> 40) % 12` words; a word is `pieces[(r >> 8) % len(pieces)]` (its form
  0 opens the text, form 2 opens a later sentence, form 1 follows a word), preceded by a comma when more
  than 3 words of its sentence are still to come (itself included) and `(r >> 32) % 16 == 0`; after the last
  word, one iteration writes the period.

Why vectorised: a request's whole output is planned when it arrives, and the loop costs ~1 us a token
(millions of tokens in a discrete-event run). The state is linear over GF(2), so the state after k
iterations is the XOR, over the seed state's set bits j, of a precomputed table `A^k e_j`, and the draws
are one array multiplication. The words, commas and periods are then placed by the defining loop over the
draws shifted right by 8 bits (`_assemble`): 56-bit values, which compiled code (this module is in setup.py's
COMPILED list) handles as small ints, where the loop's own 64-bit arithmetic would be bignum operations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import numpy.typing as npt

_MASK = (1 << 64) - 1
_CHUNK = 512  # iterations per table; longer plans continue from the chunk's last state
_U64 = np.uint64
_VECTOR_FROM = 16  # shorter plans: the loop is faster than the array operations' fixed cost
_MULTIPLIER = _U64(0x2545F4914F6CDD1D)
_EIGHT = _U64(8)


def _advance(state: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    state = state ^ (state >> _U64(12))
    state = state ^ (state << _U64(25))  # uint64 shifts drop the high bits: the `& MASK` of the loop
    return state ^ (state >> _U64(27))


def _jump_table() -> npt.NDArray[np.uint64]:
    """table[b, v, k] = the state after k + 1 iterations from the state `v << 8 * b` (8 MiB): a state's
    successors are the XOR of its eight bytes' rows."""
    bits = np.empty((64, _CHUNK), dtype=np.uint64)  # from each single-bit state
    state = np.array([1 << j for j in range(64)], dtype=np.uint64)
    for k in range(_CHUNK):
        state = _advance(state)
        bits[:, k] = state
    table = np.zeros((8, 256, _CHUNK), dtype=np.uint64)
    for b in range(8):
        for t in range(8):  # the values with bit t set highest: those below, plus bit t's row
            table[b, 1 << t : 2 << t] = table[b, : 1 << t] ^ bits[8 * b + t]
    return table


_TABLE: npt.NDArray[np.uint64] | None = None


def _states(seed_state: int, n: int) -> npt.NDArray[np.uint64]:
    """The states after 1..n iterations from `seed_state`."""
    global _TABLE
    if _TABLE is None:
        _TABLE = _jump_table()
    table = _TABLE
    chunks = []
    state = seed_state
    left = n
    while left > 0:
        m = min(left, _CHUNK)
        chunk = table[0, state & 255, :m].copy()
        for b in range(1, 8):
            np.bitwise_xor(chunk, table[b, (state >> 8 * b) & 255, :m], out=chunk)
        chunks.append(chunk)
        state = int(chunk[-1])
        left -= m
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


class SentenceIds:
    """The text over one vocabulary of words: `pieces` (ids of each word's three forms), `period`, `comma`."""

    __slots__ = ("_comma", "_first", "_inner", "_opening", "_period", "_pieces")

    def __init__(self, pieces: Sequence[tuple[int, int, int]], period: int, comma: int) -> None:
        self._pieces = list(pieces)
        # each word's three forms: opening the text, following a word, opening a later sentence
        self._first: list[object] = [piece[0] for piece in self._pieces]
        self._inner: list[object] = [piece[1] for piece in self._pieces]
        self._opening: list[object] = [piece[2] for piece in self._pieces]
        self._period = period
        self._comma = comma

    def ids(self, seed: int, n: int) -> list[int]:
        """The first `n` ids of the text of `seed` (see the module contract)."""
        if n < _VECTOR_FROM:
            return reference_sentence_ids(seed, n, self._pieces, self._period, self._comma)
        # each iteration writes at least one id, so n iterations are enough
        state0 = (seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E5F) & _MASK
        r = _states(state0, n)
        r *= _MULTIPLIER
        r >>= _EIGHT  # the draws' low byte is never read: 56-bit values stay small ints in compiled code
        return _assemble(r.tolist(), n, self._first, self._inner, self._opening, self._period, self._comma)


def _assemble(
    draws: list[int],
    n: int,
    first: list[object],
    inner: list[object],
    opening: list[object],
    period: object,
    comma: object,
) -> list[int]:
    """The defining loop (`reference_sentence_ids`) over pre-drawn iterations, each given as `r >> 8`:
    all small ints, so the compiled module runs it without 64-bit (bignum) arithmetic. The ids are handled
    as objects (compiled code would otherwise unbox each and box it again: a new int object per id)."""
    out: list[object] = []
    num_words = len(first)
    sentence_start = True
    words_left = 0
    for draw in draws:
        if len(out) >= n:
            break
        if words_left == 0 and not sentence_start:
            out.append(period)
            sentence_start = True
            continue
        word = draw % num_words
        if sentence_start:
            words_left = 5 + (draw >> 32) % 12
            out.append(opening[word] if out else first[word])
            sentence_start = False
        else:
            if words_left > 3 and (draw >> 24) & 15 == 0:
                out.append(comma)
            out.append(inner[word])
        words_left -= 1
    del out[n:]
    return cast("list[int]", out)


def reference_sentence_ids(
    seed: int, n: int, pieces: Sequence[tuple[int, int, int]], period: int, comma: int
) -> list[int]:
    """The defining loop, one word at a time (see the module contract)."""
    out: list[int] = []
    num_words = len(pieces)
    state = (seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E5F) & _MASK
    sentence_start = True
    words_left = 0
    while len(out) < n:
        state ^= state >> 12
        state ^= (state << 25) & _MASK
        state ^= state >> 27
        r = (state * 0x2545F4914F6CDD1D) & _MASK
        if words_left == 0 and not sentence_start:
            out.append(period)
            sentence_start = True
            continue
        if sentence_start:
            words_left = 5 + (r >> 40) % 12
        word = pieces[(r >> 8) % num_words]
        if sentence_start:
            out.append(word[0] if not out else word[2])
            sentence_start = False
        else:
            if words_left > 3 and (r >> 32) % 16 == 0:
                out.append(comma)
            out.append(word[1])
        words_left -= 1
    del out[n:]
    return out
