"""The session-inference index (proxy/session_chain.py `PrefixChains`) under a flood of one-call
conversations: the longest `remember` while it fills and once it is full (thirty-sixth session,
docs/results/overhead.md).

    python3 docs/results/overhead-s36/chain_stalls.py [--keys N] [--steps M] [--tree DIR]

Each step remembers a new conversation's key for a session of its own, as an anonymous one-shot call does
when it ends; once `--keys` keys are in, each step also evicts the oldest. Run against a tree before the index
was split (a worktree of 4d33d21, built in place) and after it, to compare.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=300_000)
    parser.add_argument("--tree", default=str(Path(__file__).resolve().parents[3]))
    args = parser.parse_args()
    sys.path.insert(0, args.tree)
    from xxhash import xxh3_128_digest

    from proxy.session_chain import Answer, PrefixChains

    chains = PrefixChains(max_entries=args.keys)
    answer = Answer("Hello there.")
    prompts = [xxh3_128_digest(b"%d" % i) for i in range(args.keys + args.steps)]
    fill_worst = churn_worst = total = 0.0
    for i, prompt in enumerate(prompts):
        started = time.perf_counter()
        chains.remember(prompt, answer, f"conv-f98b6eb582687690bcd1d57b-saga-3487-{i}")
        spent = time.perf_counter() - started
        if i < args.keys:
            fill_worst = max(fill_worst, spent)
        else:
            churn_worst = max(churn_worst, spent)
            total += spent
    print(
        f"{args.tree}: filling: longest step {fill_worst * 1e3:.2f} ms; churn: longest step "
        f"{churn_worst * 1e3:.2f} ms, mean {total / max(args.steps, 1) * 1e6:.2f} µs"
    )


if __name__ == "__main__":
    main()
