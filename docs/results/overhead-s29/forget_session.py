"""Ending an inferred session in a full prefix-chain index (100,000 keys over 50,000 sessions), in process.

SAGA_PURE_PYTHON=1 python3 docs/results/overhead-s29/forget_session.py
"""

from __future__ import annotations

import os
import time

from proxy.data_structs import Answer
from proxy.session_chain import PrefixChains


def main() -> None:
    chains = PrefixChains()
    for i in range(100_000):
        chains.remember(os.urandom(16), Answer(text=f"a{i}", tool_calls=()), f"s{i % 50_000}")
    started = time.perf_counter()
    for i in range(1000):
        chains.forget_session(f"s{i}")
    per_session_us = (time.perf_counter() - started) * 1e6 / 1000
    print(f"forget_session at 100,000 keys: {per_session_us:.1f} µs a session")


if __name__ == "__main__":
    main()
