"""Per-request engine state, request validation, and the deterministic output each request will produce.

Contract: `validate` raises InvalidRequestError with vLLM's wording for requests that can never run;
`output_plan` is a pure function of the request (prompt tokens, max/min tokens, ignore_eos) and the context
limit: `max_tokens` tokens with `ignore_eos`, else a length drawn from a hash of the prompt (log-uniform in
[32, 724), at least `min_tokens`) ending in EOS ("stop"), unless capped by `max_tokens` or the context limit
("length"). The tokens are seeded by the prompt's checksum, or by the `prompt_checksum` the request carries,
which stands for it.
"""

from __future__ import annotations

from array import array
from collections.abc import MutableSequence, Sequence
from typing import cast

import numpy as np
import numpy.typing as npt

from simulator.block_hash import BlockHash, ExtraKeys, first_block_extra_keys
from simulator.engine_types import EngineRequest, InvalidRequestError, prompt_checksum
from simulator.tokenizer import EOS_ID, Tokenizer

_MIN_NATURAL = 32
_CACHE_SALT_FORBIDDEN = frozenset("@/\\\x00")  # vLLM's cache_salt rules (validate_cache_salt)
_CACHE_SALT_MAX_LEN = 128
_NATURAL_DOUBLINGS = 4.5  # natural output lengths are log-uniform in [32, 32 * 2**4.5)


def validate(req: EngineRequest, *, max_model_len: int, scheduling_policy: str, block_size: int) -> None:
    """Raise InvalidRequestError if `req` can never run on an engine with these limits."""
    num_prompt = len(req.prompt_token_ids)
    if num_prompt == 0:
        raise InvalidRequestError("The prompt cannot be empty.")
    if req.max_tokens is not None and req.max_tokens < 1:
        raise InvalidRequestError(f"max_tokens must be at least 1, got {req.max_tokens}.")
    if req.min_tokens < 0 or (req.max_tokens is not None and req.min_tokens > req.max_tokens):
        raise InvalidRequestError(
            f"min_tokens must be between 0 and max_tokens={req.max_tokens}, got {req.min_tokens}."
        )
    if req.max_tokens is None and num_prompt >= max_model_len:
        raise InvalidRequestError(
            f"This model's maximum context length is {max_model_len} tokens. However, your request has "
            f"{num_prompt} input tokens. Please reduce the length of the input messages."
        )
    if req.max_tokens is not None and num_prompt + req.max_tokens > max_model_len:
        raise InvalidRequestError(
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{num_prompt + req.max_tokens} tokens ({num_prompt} in the messages, {req.max_tokens} in "
            f"the completion). Please reduce the length of the messages or completion."
        )
    if req.prompt_block_hashes is not None and len(req.prompt_block_hashes) > num_prompt // block_size:
        raise InvalidRequestError("prompt_block_hashes has more hashes than the prompt has full blocks.")
    if req.cache_salt is not None and not req.cache_salt:
        raise InvalidRequestError("Parameter 'cache_salt' must be a non-empty string if provided.")
    if req.cache_salt is not None and (
        len(req.cache_salt) > _CACHE_SALT_MAX_LEN or not _CACHE_SALT_FORBIDDEN.isdisjoint(req.cache_salt)
    ):
        raise InvalidRequestError(
            "Parameter 'cache_salt' must be at most 128 characters and must not contain "
            "'@', '/', '\\\\', or NUL."
        )
    if req.priority != 0 and scheduling_policy != "priority":
        raise InvalidRequestError(f"Got priority {req.priority} but Priority scheduling is not enabled.")


def output_plan(req: EngineRequest, *, max_model_len: int, tokenizer: Tokenizer) -> tuple[list[int], str]:
    """The token ids `req` will generate and its finish reason."""
    prompt = req.prompt_token_ids
    cap = max_model_len - len(prompt)
    if req.max_tokens is not None:
        cap = min(cap, req.max_tokens)
    seed = req.prompt_checksum if req.prompt_checksum is not None else prompt_checksum(prompt)
    if req.ignore_eos:
        length, reason = cap, "length"
    else:
        u = ((seed * 0x9E3779B1) & 0xFFFFFFFF) / 2**32
        natural = max(int(_MIN_NATURAL * 2 ** (u * _NATURAL_DOUBLINGS)), req.min_tokens)
        length, reason = (natural, "stop") if natural < cap else (cap, "length")
    plan = tokenizer.generate_ids(seed, length)
    if reason == "stop":
        plan[-1] = EOS_ID
    return plan, reason


class RequestState:
    """Engine-side state of one request (mutable; the engine owns it)."""

    __slots__ = (
        "arrival",
        "block_hashes",
        "block_ids",
        "cached_tokens",
        "computed_at_preemption",
        "extra_keys",
        "finish_reason",
        "first_scheduled",
        "num_cached_blocks",
        "num_computed",
        "num_offered",
        "num_output",
        "num_preemptions",
        "num_prompt",
        "plan",
        "priority",
        "request_id",
        "scheduled",
        "seq_no",
        "tokens",
    )

    def __init__(
        self,
        req: EngineRequest,
        now: float,
        seq_no: int,
        plan: list[int],
        finish_reason: str,
        *,
        own_prompt: bool = False,
    ) -> None:
        self.request_id = req.request_id
        prompt = req.prompt_token_ids
        # prompt, then outputs as they are sampled; a 64-bit array prompt is kept as it is (`own_prompt`,
        # Engine.add_request) or copied as one buffer, by `extend`, which leaves room (~1/16 more) so the
        # outputs append without copying the prompt again
        self.tokens: list[int] | array[int]
        if own_prompt and isinstance(prompt, array) and prompt.typecode == "q":
            self.tokens = prompt
        elif isinstance(prompt, array) and prompt.typecode == "q":
            self.tokens = array("q")
            self.tokens.extend(prompt)
        else:
            self.tokens = list(prompt)
        self.num_prompt = len(self.tokens)
        # tokens to sample; as a buffer beside a buffer prompt, so a decode run appends a stretch as one copy
        self.plan: list[int] | array[int] = array("q", plan) if isinstance(self.tokens, array) else plan
        self.finish_reason = finish_reason
        self.priority = req.priority
        self.arrival = now
        self.seq_no = seq_no
        self.extra_keys: ExtraKeys = first_block_extra_keys(req.cache_salt)
        # 64-bit ids: the pool's array operations view them without conversion (block_pool.as_block_ids);
        # replaced, never resized, once such a view may exist (a request's blocks are freed)
        self.block_ids: array[int] = array("q")
        given = req.prompt_block_hashes
        # an array("q") (int hashes, the discrete-event clients') stays one: copied as one buffer, and
        # BlockPool.lookup_from views it instead of converting each hash; the engine appends its int hashes
        self.block_hashes: MutableSequence[BlockHash] = (
            cast("MutableSequence[BlockHash]", array("q", given))
            if isinstance(given, array)
            else list(given or ())
        )
        self.num_cached_blocks = 0  # leading blocks of block_ids registered in the prefix cache
        self.num_computed = 0  # tokens whose KV is in block_ids
        self.num_offered = 0  # leading prompt blocks handed to the CPU offload tier (simulator.offload)
        self.num_output = 0
        self.num_preemptions = 0
        self.computed_at_preemption = 0  # the most tokens whose KV it had at a preemption (the recount)
        self.cached_tokens = -1  # set at first admission
        self.first_scheduled = -1.0
        self.scheduled = 0  # tokens scheduled in the current step

    def set_blocks(self, hit: Sequence[int] | npt.NDArray[np.int64], new_blocks: list[int]) -> None:
        """On admission: the blocks of its prefix hit, then the fresh ones."""
        ids = array("q", hit.tobytes()) if isinstance(hit, np.ndarray) else array("q", hit)
        ids.extend(new_blocks)
        self.block_ids = ids

    @property
    def sort_key(self) -> tuple[int, float, int]:
        return (self.priority, self.arrival, self.seq_no)
