"""Write vLLM's own block hashes for the cases on stdin to the file named by argv[1] (run with the vLLM
venv's python, by the tests; vLLM logs to stdout, so the answer goes to a file).

Input: a JSON list of {"tokens": [int], "block_size": int, "algo": str, "cache_salt": str | null}.
Output: a JSON list with, per case, the hex block hashes vLLM's engine gives such a request: a v1 `Request`
hashed by `get_request_block_hasher` after `init_none_hash`, exactly as `EngineCore` sets them up (so the
seed follows this process's PYTHONHASHSEED).
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    from vllm import SamplingParams
    from vllm.utils.hashing import get_hash_fn_by_name
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
    from vllm.v1.request import Request

    out = []
    for i, case in enumerate(json.load(sys.stdin)):
        hash_fn = get_hash_fn_by_name(case["algo"])
        init_none_hash(hash_fn)
        request = Request(
            f"case-{i}",
            case["tokens"],
            SamplingParams(max_tokens=1),
            None,
            cache_salt=case["cache_salt"],
            block_hasher=get_request_block_hasher(case["block_size"], hash_fn),
        )
        out.append([bytes(h).hex() for h in request.block_hashes])
    with open(sys.argv[1], "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
