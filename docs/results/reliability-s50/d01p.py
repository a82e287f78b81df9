# ruff: noqa
"""Review B's d01 (reliability-s49/b/d01_hetero_speed.py) with its two replicas' simulator profiles taken from
FAST (default llama3-8b-h100) and SLOW (default llama3-70b-tp4-a100): runs that script with its helpers'
`start_sim` swapping the profile names. Same environment as d01 (SAGA_TREE, WORKERS, BP, REVIEW_LOGDIR)."""

import os
import runpy
import sys

REVIEW = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reliability-s49", "b")
sys.path.insert(0, REVIEW)
import _common  # noqa: E402

SWAP = {
    "llama3-8b-h100": os.environ.get("FAST", "llama3-8b-h100"),
    "llama3-70b-tp4-a100": os.environ.get("SLOW", "llama3-70b-tp4-a100"),
}
_start_sim = _common.start_sim


def start_sim(port, blocks=None, profile=None, **options):  # type: ignore[no-untyped-def]
    return _start_sim(port, blocks=blocks, profile=SWAP.get(profile, profile), **options)


_common.start_sim = start_sim
runpy.run_path(os.path.join(REVIEW, "d01_hetero_speed.py"), run_name="__main__")
