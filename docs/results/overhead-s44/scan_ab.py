"""What reading a stream costs the proxy's scanner, one tree against another (forty-fourth session).

    python3 docs/results/overhead-s44/scan_ab.py TREE [TREE ...] [--rounds N]

Each tree (a checkout with its compiled modules built in place) is timed in a process of its own, in turn,
`--rounds` times: `StreamScanner` collecting the answer and stripping the usage event the proxy asked for,
on the chat route (what a stream naming no session costs), on two streams: the 12-event answer of
`loadtests/bench/call_cost.py` (the overhead benchmark's) in one read, and a vLLM-shaped answer of 34 events
(`"finish_reason":null` in every chunk, a usage event, `[DONE]`) in one read and one event a read (as vLLM
sends tokens). Least `time.process_time` per stream over 5 repeats, µs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

_CHILD = "--child"


def _vllm_events() -> list[bytes]:
    def event(delta: str, finish: str) -> bytes:
        return (
            b'data: {"id":"chatcmpl-9f1c2a","object":"chat.completion.chunk","created":1733500000,'
            b'"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"delta":%s,"logprobs":null,'
            b'"finish_reason":%s}]}\n\n' % (delta.encode(), finish.encode())
        )

    events = [event('{"role":"assistant","content":""}', "null")]
    events += [event(f'{{"content":" tok{i}"}}', "null") for i in range(31)]
    events.append(event("{}", '"stop"'))
    events.append(
        b'data: {"id":"chatcmpl-9f1c2a","object":"chat.completion.chunk","created":1733500000,"model":"m",'
        b'"choices":[],"usage":{"prompt_tokens":812,"total_tokens":843,"completion_tokens":31,'
        b'"prompt_tokens_details":{"cached_tokens":800}}}\n\n'
    )
    events.append(b"data: [DONE]\n\n")
    return events


def _child(tree: str) -> None:
    sys.path.insert(0, tree)
    from loadtests.bench.call_cost import answer_segments
    from proxy.sse_scan import StreamScanner

    framed = b"".join(answer_segments(True, "one")).split(b"\r\n\r\n", 1)[1]
    bench, rest = [], framed
    while True:  # the chunked body's chunks
        size, _, rest = rest.partition(b"\r\n")
        if int(size, 16) == 0:
            break
        bench.append(rest[: int(size, 16)])
        rest = rest[int(size, 16) + 2 :]
    vllm = _vllm_events()
    cases = [
        ("benchmark stream, 12 events, one read", [b"".join(bench)], 40_000),
        ("vLLM-shaped, 34 events, one read", [b"".join(vllm)], 10_000),
        ("vLLM-shaped, 34 events, an event a read", vllm, 5_000),
    ]
    for name, reads, n in cases:
        best = float("inf")
        for _ in range(5):
            start = time.process_time()
            for _ in range(n):
                scanner = StreamScanner(True, 1 << 20, "/v1/chat/completions")
                for read in reads:
                    scanner.feed_stripping_usage(read)
                scanner.flush()
                scanner.usage()
                scanner.answer()
            best = min(best, (time.process_time() - start) / n * 1e6)
        print(f"  {name:<42} {best:6.2f} µs", flush=True)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == _CHILD:
        _child(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="+")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for round_ in range(args.rounds):
        for tree in args.trees:
            print(f"== {tree} (round {round_ + 1})", flush=True)
            subprocess.run([sys.executable, __file__, _CHILD, tree], check=True, cwd=tree)


if __name__ == "__main__":
    main()
