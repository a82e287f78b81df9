"""A deterministic simulated tokenizer, chat template and text generator.

Contract:
- `encode(text)` maps text to token ids in `[0, VOCAB_SIZE)`, identically in every process (ids come from
  blake2b of each piece, never from Python's randomised `str` hash).
- Prefix-stable: if `a` is a prefix of `b` and either `a` ends with a newline, or `a` ends with a
  non-whitespace character and `b` continues with whitespace, then `encode(a)` is a prefix of `encode(b)`.
- Roughly one token per word (with its leading space) or punctuation mark; words longer than
  `_LONG_WORD` characters are split into 4-character pieces; each newline is its own token; `<|name|>` is one
  special token.
- `render_chat(messages)` renders each message and then the assistant generation prompt, so appending
  messages to a conversation re-renders the old rendering as an exact prefix (hence a token prefix).
- `generate_ids(seed, n)` yields plausible words whose text `decode`s and re-`encode`s to the same ids, and
  `EOS_ID` is the `<|end|>` token that closes a message: a conversation that carries a model's answer back
  re-tokenizes to prompt + output tokens, as with a real model.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from simulator.sentence_ids import SentenceIds

VOCAB_SIZE = 32000
_NUM_RESERVED = 256  # ids below this are special tokens only

START_TOKEN = "<|start|>"
END_TOKEN = "<|end|>"
START_ID = 1
EOS_ID = 2
_SPECIAL_IDS = {START_TOKEN: START_ID, END_TOKEN: EOS_ID}

_LONG_WORD = 8
_MAX_CACHED_PIECES = 1 << 20  # bounds memory under endless novel text (random-token load tests)
_CHUNK = 4

# Order matters: special tokens, newlines, words with one optional leading space, punctuation with one
# optional leading space, then runs of other whitespace (a run leaves its last space to a following word).
_PIECE_RE = re.compile(r"<\|[a-z_]+\|>|\n| ?\w+| ?[^\w\s]|[^\S\n]+(?!\S)|[^\S\n]+")

_WORD_TEXT = (
    "the of and to in is that for it as with was on be by this are from at or an have not which but all "
    "were can they one has there their been if more when will would who so no file test code line call "
    "value error check run fix read write open path list type name data model step tool state input output "
    "result return function class method module change update patch build start stop next first last "
    "case both each other some such only also then than into over after before under while where because "
    "should could might must still again later found using make made take need want look see show give "
    "keep find try use work seem turn help move live hold bring happen begin allow lead stand learn "
    "change follow create speak spend grow offer remember consider appear serve expect build stay fall "
    "reach remain suggest raise pass report decide pull"
)
_WORDS = _WORD_TEXT.split()


def _piece_id(piece: str) -> int:
    digest = hashlib.blake2b(piece.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return _NUM_RESERVED + int.from_bytes(digest, "little") % (VOCAB_SIZE - _NUM_RESERVED)


def _split_piece(piece: str) -> list[str]:
    lead = 1 if piece[0] == " " else 0  # the leading space rides with the first chunk
    if len(piece) - lead <= _LONG_WORD or piece in _SPECIAL_IDS:
        return [piece]
    head = _CHUNK + lead
    return [piece[:head]] + [piece[i : i + _CHUNK] for i in range(head, len(piece), _CHUNK)]


class Tokenizer:
    """Text <-> token ids. Caches piece -> ids, so it is fast on repeated text; not thread-safe."""

    def __init__(self) -> None:
        self._ids: dict[str, tuple[int, ...]] = {}
        self._text: dict[int, str] = {v: k for k, v in _SPECIAL_IDS.items()}
        self._period = self._single(".")
        self._comma = self._single(",")
        # Per word: ids of "Word", " word", " Word". Words whose ids collide with an earlier piece are left
        # out, so every generated id decodes back to the piece that made it.
        self._gen_pieces: list[tuple[int, int, int]] = []
        used = {self._period, self._comma}
        for word in dict.fromkeys(w for w in _WORDS if len(w) <= _LONG_WORD):
            forms = (word.capitalize(), " " + word, " " + word.capitalize())
            ids = tuple(_piece_id(f) for f in forms)
            if len(set(ids)) == 3 and used.isdisjoint(ids):
                used.update(ids)
                self._gen_pieces.append(
                    (self._single(forms[0]), self._single(forms[1]), self._single(forms[2]))
                )
        self._sentences = SentenceIds(self._gen_pieces, self._period, self._comma)
        self._base_ids = dict(self._ids)
        self._base_text = dict(self._text)

    def _single(self, piece: str) -> int:
        (token,) = self._lookup(piece)
        return token

    def _lookup(self, piece: str) -> tuple[int, ...]:
        ids = self._ids.get(piece)
        if ids is None:
            if len(self._ids) >= _MAX_CACHED_PIECES:
                self._ids = dict(self._base_ids)
                self._text = dict(self._base_text)
            special = _SPECIAL_IDS.get(piece)
            if special is not None:
                ids = (special,)
            else:
                parts = _split_piece(piece)
                ids = tuple(_piece_id(p) for p in parts)
                for part, token in zip(parts, ids, strict=True):
                    self._text.setdefault(token, part)
            self._ids[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (no BOS)."""
        out: list[int] = []
        extend = out.extend
        for piece in _PIECE_RE.findall(text):
            ids = self._ids.get(piece)  # not hoisted: _lookup may swap the cache out
            extend(ids if ids is not None else self._lookup(piece))
        return out

    def decode(self, token_ids: Iterable[int], *, skip_special_tokens: bool = True) -> str:
        """Text of `token_ids`; ids never produced by `encode` or `generate_ids` become plausible words."""
        text = self._text
        parts: list[str] = []
        for token in token_ids:
            if token < _NUM_RESERVED:
                if not skip_special_tokens:
                    parts.append(text.get(token, ""))
                continue
            piece = text.get(token)
            parts.append(piece if piece is not None else " " + _WORDS[token % len(_WORDS)])
        return "".join(parts)

    def token_text(self, token: int) -> str:
        """The text one output token contributes to a stream (special tokens contribute nothing)."""
        if token < _NUM_RESERVED:
            return ""
        piece = self._text.get(token)
        return piece if piece is not None else " " + _WORDS[token % len(_WORDS)]

    def generate_ids(self, seed: int, n: int) -> list[int]:
        """`n` token ids of plausible sentences, a pure function of (seed, n); they decode and re-encode
        to themselves (simulator.sentence_ids defines the text)."""
        return self._sentences.ids(seed, n)


def render_chat(messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True) -> str:
    """The prompt text of a chat: `<|start|>{role}\\n{content}<|end|>\\n` per message, then
    `<|start|>assistant\\n` when `add_generation_prompt`. Content may be a string, a list of parts with
    `text`, or absent; tool calls are rendered after the content (entries that are not
    `{"function": {...}}` render as an empty call: `check_tool_calls` is the check a route makes first)."""
    out: list[str] = []
    for message in messages:
        out.append(f"{START_TOKEN}{message.get('role', 'user')}\n{_content_text(message.get('content'))}")
        tool_calls = message.get("tool_calls")
        if isinstance(tool_calls, list):
            for call in tool_calls:
                function = call.get("function") if isinstance(call, Mapping) else None
                if not isinstance(function, Mapping):
                    function = {}  # the HTTP routes answer 400 first (check_tool_calls)
                out.append(f"\n<|tool_call|>{function.get('name', '')} {function.get('arguments', '')}")
        out.append(f"{END_TOKEN}\n")
    if add_generation_prompt:
        out.append(f"{START_TOKEN}assistant\n")
    return "".join(out)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return str(content)


def check_tool_calls(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """Why a chat's assistant `tool_calls` are malformed (vLLM answers such a request 400), or None: each
    must be a list of objects whose `function` is an object, its `name` and `arguments` strings (both
    required, as in vLLM's message types)."""
    for i, message in enumerate(messages):
        tool_calls = message.get("tool_calls")
        if tool_calls is None:
            continue
        if not isinstance(tool_calls, list):
            return f"messages[{i}].tool_calls must be a list of tool calls."
        for j, call in enumerate(tool_calls):
            where = f"messages[{i}].tool_calls[{j}]"
            if not isinstance(call, Mapping):
                return f"{where} must be an object."
            function = call.get("function")
            if not isinstance(function, Mapping):
                return f"{where}.function must be an object with a 'name' and 'arguments'."
            for field in ("name", "arguments"):
                if not isinstance(function.get(field), str):
                    return f"{where}.function.{field} must be a string."
    return None
