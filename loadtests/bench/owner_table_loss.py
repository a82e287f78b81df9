"""How often the workers' chain table (proxy/response_owners.py `ChainOwners`) loses a conversation's entry
before the conversation's next call: `python -m loadtests.bench.owner_table_loss [--gap CALLS]`.

Two workers record keys in turn; each key is looked up again once `gap` later keys were recorded (1,000
calls a second and a minute between a conversation's calls: 60,000). Prints the share lost, beside the loss
a direct-mapped table of as many slots would have (one later key in the slot loses it: analytic)."""

from __future__ import annotations

import argparse
import random
import tempfile
from collections import deque

from proxy.response_owners import CHAIN_SLOTS, ChainOwners


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gap", type=int, default=60_000, help="keys recorded between a key and its look-up")
    parser.add_argument("--probes", type=int, default=400_000)
    args = parser.parse_args()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as directory:
        workers = [ChainOwners(directory, 0), ChainOwners(directory, 1)]
        pending: deque[tuple[bytes, int]] = deque()
        lost = probes = 0
        n = 0
        while probes < args.probes:
            key = rng.getrandbits(128).to_bytes(16, "little")
            workers[n % 2].record(key)
            pending.append((key, n % 2))
            n += 1
            if len(pending) > args.gap:
                old, by = pending.popleft()
                if n > 3 * args.gap:  # the table full first: steady state
                    probes += 1
                    lost += workers[0].owner(old) != by
        for w in workers:
            w.close()
    direct = 1 - (1 - 1 / CHAIN_SLOTS) ** args.gap
    print(f"set-associative: {lost} of {probes} lost ({lost / probes:.2e}); direct-mapped: {direct:.1%}")


if __name__ == "__main__":
    main()
