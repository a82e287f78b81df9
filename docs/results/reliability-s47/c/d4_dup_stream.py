# ruff: noqa
"""Item 5: a body naming `stream` twice, a lax value first and false last. vLLM reads JSON with Python's json
(the last wins: false) and serves it; the proxy's lax path (proxy/lax_flags.py) is asked only after msgspec's
strict decoding refused the FIRST value, decodes the body into a dict (the last wins: false), sees nothing to
loosen and lets the refusal stand: a 400 'Expected bool | null, got str' for a body vLLM serves. The same body
with "true" first (which msgspec's loose reading takes) is served. Also a number out of double range anywhere
in the body (vLLM's json reads 1e400 as inf) fails the lax path's whole-body decode. DEFECT when the proxy
refuses what the "true" spelling passes."""

import os, sys

sys.path.insert(0, os.environ.get("SAGA_TREE", "/tmp/snap47b"))
from proxy.identity import decode_call


def ok(body):
    try:
        decode_call(body)
        return "served"
    except Exception as e:
        return f"400 ({type(e).__name__}: {str(e)[:60]})"


cases = [
    (b'{"model":"m","stream":"true","stream":false}', b'{"model":"m","stream":"yes","stream":false}'),
    (
        b'{"model":"m","stream":true,"metadata":{"x":1e400}}',
        b'{"model":"m","stream":"yes","metadata":{"x":1e400}}',
    ),
]
bad = False
for ref, lax in cases:
    a, b = ok(ref), ok(lax)
    print(ref.decode(), "->", a)
    print(lax.decode(), "->", b)
    if a == "served" and b != "served":
        bad = True
print("DEFECT: the lax spelling of stream is refused where the strict one is served" if bad else "OK: alike")
