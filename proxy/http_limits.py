"""The bounds on an HTTP message's head that the proxy reads, in both directions.

Contract: a client's request (proxy/fast_server.py) and a replica's answer (proxy/upstream_pool.py) are read
within the same bounds: at most `MAX_HEADERS` header fields and `MAX_HEAD_BYTES` of them (the request line
counts too on the client side), a field of at most `MAX_FIELD_BYTES` on the client side (aiohttp's limit; an
answer's one field is bounded by the whole head). Past them a request is refused with an OpenAI-style 400 or
431 and an answer fails like a malformed one. vLLM sends ~5 fields; aiohttp's server and client refuse more
than 128.
"""

from __future__ import annotations

MAX_FIELD_BYTES = 8190  # one header line, as aiohttp allows
MAX_HEAD_BYTES = 64 * 1024  # all header lines of one message
MAX_HEADERS = 128  # header lines of one message, as aiohttp's server allows (it answers more with a 400)
