"""The session-inference index (proxy/session_chain.py `PrefixChains`) under a flood of one-call
conversations: the longest `remember` while it fills and once it is full (thirty-sixth session,
docs/results/overhead.md).

    python3 docs/results/overhead-s36/chain_stalls.py [--keys N] [--steps M] [--tree DIR]

Each step remembers a new conversation's key for a session of its own, as an anonymous one-shot call does
when it ends; once `--keys` keys are in, each also evicts the oldest (the index does, past `max_entries`).
Timed by docs/results/overhead-s35/table_stalls.py's loop. Run against a tree before the index was split (a
worktree of 4d33d21, built in place) and after it, to compare.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "overhead-s35"))
from table_stalls import parsed_args, timed_steps


def main() -> None:
    args = parsed_args(__doc__)
    from xxhash import xxh3_128_digest

    from proxy.session_chain import Answer, PrefixChains

    chains = PrefixChains(max_entries=args.keys)
    answer = Answer("Hello there.")

    def remember(conversation: str) -> None:
        chains.remember(xxh3_128_digest(conversation.encode()), answer, conversation)

    print(f"{args.tree}:", timed_steps(remember, lambda: None, args.keys, args.steps))


if __name__ == "__main__":
    main()
