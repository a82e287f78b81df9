"""How long identifying one call takes when its conversation is N one-word messages, in process.

SAGA_PURE_PYTHON=1 python3 docs/results/overhead-s29/many_messages.py 1600000
"""

from __future__ import annotations

import sys
import time

import msgspec
from multidict import CIMultiDict

from proxy import identity
from proxy.data_structs import CallFields
from proxy.session_chain import PrefixChains, chain_of, decode_messages


def main() -> None:
    count = int(sys.argv[1])
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": "w"} for i in range(count)]
    body = msgspec.json.encode({"model": "m", "messages": messages})
    fields = msgspec.json.decode(body, type=CallFields)
    started = time.perf_counter()
    identity.identify(CIMultiDict(), fields, "r1", chains=PrefixChains())
    identified = time.perf_counter() - started
    started = time.perf_counter()
    decoded = decode_messages(fields.messages)
    decoded_s = time.perf_counter() - started
    assert decoded is not None
    started = time.perf_counter()
    chain_of(decoded)
    chained = time.perf_counter() - started
    print(
        f"{len(body) / 1e6:.1f} MB, {count:,} messages: identify {identified:.3f} s; "
        f"decode {decoded_s:.3f} s, chain {chained:.3f} s ({chained / count * 1e6:.2f} µs a message)"
    )


if __name__ == "__main__":
    main()
