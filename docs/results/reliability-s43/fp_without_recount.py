# ruff: noqa
"""The DES fingerprints (loadtests/des/fingerprint.py) with each replica's `recomputed_prefill_tokens` left out:
the thirteenth review changed how that counter is counted (the engine's recount of what preempted calls
compute again), and nothing else in a run may change. Run it against two trees and compare:
    PYTHONPATH=/tree/a python3 fp_without_recount.py > a.txt
    PYTHONPATH=/tree/b python3 fp_without_recount.py > b.txt && diff a.txt b.txt"""

import hashlib

import msgspec

from loadtests.des.cluster import Cluster
from loadtests.des.fingerprint import CASES

for name, (make_tasks, config) in CASES.items():
    result = msgspec.to_builtins(Cluster(make_tasks(), config).run())
    recomputed = [r.pop("recomputed_prefill_tokens") for r in result["replicas"]]
    digest = hashlib.sha256(msgspec.json.encode(result)).hexdigest()
    print(f"{name:<34} {digest}  recomputed {recomputed}", flush=True)
