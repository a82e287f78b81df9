# ruff: noqa
"""Two processes call proxy.supervisor.hold_port at the same instant for one port, spelled 127.0.0.1 and
0.0.0.0 (same port, overlapping addresses). Both succeeding means both supervisors would serve the port."""

import os
from pathlib import Path

import os, sys, time, multiprocessing as mp

sys.path.insert(0, os.environ.get("SAGA_TREE", str(Path(__file__).resolve().parents[4])))
from proxy.supervisor import hold_port


def worker(host, port, at, q, hold):
    while time.monotonic() < at:
        pass
    try:
        s = hold_port(host, port)
        q.put((host, True))
        hold.wait(2)
        s.close()
    except OSError as e:
        q.put((host, False))


def trial(pair, port):
    q = mp.Queue()
    hold = mp.Event()
    at = time.monotonic() + 0.15
    ps = [mp.Process(target=worker, args=(h, port, at, q, hold)) for h in pair]
    for p in ps:
        p.start()
    res = [q.get(timeout=10) for _ in ps]
    hold.set()
    for p in ps:
        p.join()
    return sum(ok for _, ok in res)


if __name__ == "__main__":
    mp.set_start_method("fork")
    N = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    results = {}
    for pair in [("127.0.0.1", "127.0.0.1"), ("127.0.0.1", "0.0.0.0"), ("0.0.0.0", "::")]:
        both = 0
        for i in range(N):
            both += trial(pair, 25200 + i % 50) == 2
        results[pair] = both
    bad = {f"{a} vs {b}": n for (a, b), n in results.items() if n}
    if bad:
        print(
            f"DEFECT: hold_port let two processes hold one port at the same instant when the address is spelled differently (both held, out of {N} tries each): {bad}; same spelling: {results[('127.0.0.1', '127.0.0.1')]}"
        )
    else:
        print(f"OK: simultaneous hold_port never both held in {N} tries each: {results}")
