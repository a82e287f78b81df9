"""Deterministic filler text of a given length in words, for prompts, observations and system prompts."""

from __future__ import annotations

import random

_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "so", "vi", "de", "po", "za", "fe", "gu", "hi", "ju", "be"]


def vocabulary(size: int = 4096, seed: int = 1234) -> list[str]:
    """`size` distinct pseudo-words of 2-3 syllables (short, so one word is about one token)."""
    rng = random.Random(seed)
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))))
    return sorted(words)


_VOCAB = vocabulary()


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(_VOCAB, k=n))


def shared_text(key: str, n: int) -> str:
    """The same `n` words for the same `key`: a system prompt shared by all tasks of one agent type."""
    return words(random.Random(f"shared/{key}"), n)
