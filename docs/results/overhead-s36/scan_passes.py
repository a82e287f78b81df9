"""What a stream's scan costs, in pieces (thirty-sixth session, docs/results/overhead.md).

    python3 docs/results/overhead-s36/scan_passes.py [--tree DIR]

On the 13-event stream of `loadtests/bench/call_cost.py` (one read, ~1.3 KB): the time of one `bytes.find`
pass for each needle the scanner searches for; the whole scan (`StreamScanner`, collecting the answer or not,
stripping the usage event or not, on the chat route); and the decode of its twelve JSON events as one array
into the answer Structs (GC-tracked before the change, `gc=False` after). `--tree`: a checkout to import the
scanner from (a tree before the change, built in place, to compare).
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

N = 200_000


def _per_call_us(fn: Any, n: int = N) -> float:
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", default=str(Path(__file__).resolve().parents[3]))
    args = parser.parse_args()
    sys.path.insert(0, args.tree)
    import msgspec

    from loadtests.bench.call_cost import answer_segments
    from proxy import data_structs
    from proxy.sse_scan import _JSON_DATA_LINE

    events = _dechunked(b"".join(answer_segments(True, "one")))
    body = b"".join(events)
    print(f"{args.tree}: a stream of {len(events)} events, {len(body)} bytes")
    needles = (b'"finish_reason"', b'"name"', b'"stop_reason"', b'"resp_', b'"usage"', b'"choices":[]', b"\r")
    for needle in (*needles, b"\n\r\n"):
        ns = _per_call_us(partial(body.find, needle)) * 1e3
        print(f"  one find pass for {needle!r:<18} {ns:6.0f} ns")
    regex_us = _per_call_us(partial(_JSON_DATA_LINE.findall, body))
    print(f"  the data-line regex (findall)       {regex_us:6.2f} µs")
    for collect in (True, False):
        for strip in (True, False):
            scan_us = _scan_us(body, collect, strip)
            print(f"  scan, collecting {collect!s:<5} stripping {strip!s:<5} {scan_us:6.2f} µs")
    array = b"[" + b",".join(_JSON_DATA_LINE.findall(body)) + b"]"
    decoder = msgspec.json.Decoder(list[data_structs.AnswerFields])
    for _ in range(2):
        decode_us = _per_call_us(partial(decoder.decode, array))
        print(f"  decode the events into the answer Structs {decode_us:6.2f} µs")


def _dechunked(answer: bytes) -> list[bytes]:
    """The body's chunks of a chunked HTTP answer (here: one SSE event each)."""
    body, chunks = answer.split(b"\r\n\r\n", 1)[1], []
    while True:
        size, _, body = body.partition(b"\r\n")
        if int(size, 16) == 0:
            return chunks
        chunks.append(body[: int(size, 16)])
        body = body[int(size, 16) + 2 :]


def _scan_us(body: bytes, collect: bool, strip: bool) -> float:
    from proxy.sse_scan import StreamScanner

    try:
        StreamScanner(collect, 1 << 20, "/v1/chat/completions")
        route: tuple[str, ...] = ("/v1/chat/completions",)
    except TypeError:  # before the change: no route
        route = ()

    def scan() -> None:
        scanner = StreamScanner(collect, 1 << 20, *route)
        if strip:
            scanner.feed_stripping_usage(body)
            scanner.flush()
        else:
            scanner.feed(body)
        scanner.usage()
        scanner.answer()

    return _per_call_us(scan, N // 2)


if __name__ == "__main__":
    main()
