"""The model named by a multipart form (the audio routes' passthrough): found as the regex used before found
it, without its backtracking (a crafted 224 kB form held the event loop for 25 s)."""

from __future__ import annotations

import re

from hypothesis import example, given, settings
from hypothesis import strategies as st

from proxy.passthrough import _form_model, model_of

# The regex the proxy used before (proxy/passthrough.py), kept here as the definition to agree with.
_REFERENCE = re.compile(rb'name="model"\r\n(?:[^\r\n]+\r\n)*\r\n([^\r\n]{1,256})\r\n')
_NAME = b'name="model"\r\n'
_PIECES = [_NAME, b"\r\n", b"\r", b"\n", b"a", b"whisper", b"--b", b"\r\n\r\n", b"X: y", b"a" * 255]


def reference(body: bytes) -> bytes | None:
    found = _REFERENCE.search(body)
    return None if found is None else found.group(1)


@settings(max_examples=2000)
@given(st.lists(st.sampled_from(_PIECES), max_size=24))
@example([b'name="model"\r\n', b"X: y", b"\r", b"a", b'name="model"\r\n', b"\r\n", b"whisper", b"\r\n"])
@example([b'name="model"\r\n', b"\r\n", b"a" * 255, b"a", b"\r\n"])  # 256 bytes: still a value
@example([b'name="model"\r\n', b"\r\n", b"a" * 255, b"aa", b"\r\n"])  # 257: not
def test_the_form_s_model_is_what_the_regex_found(pieces: list[bytes]) -> None:
    body = b"".join(pieces)
    assert _form_model(body) == reference(body)


def test_a_crafted_form_is_read_in_one_pass() -> None:
    crafted = b'name="model"\r\n' * 200_000  # 2.8 MB: the regex would take hours over it
    assert model_of(crafted, "multipart/form-data") is None
    field = b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-large\r\n--b--\r\n'
    assert model_of(crafted + field, "multipart/form-data") == "whisper-large"
