"""GPU cost model of one vLLM engine step, and the hardware/model profiles it is calibrated for.

Contract: `step_time_s` is a pure function of a profile and what one continuous-batching step holds:
    fixed + linear + prefill attention + decode attention   (milliseconds, returned in seconds)
- fixed: weight streaming floor plus per-step overhead, paid by every non-empty step;
- linear: `prefill_token_ms` per token beyond the first `linear_knee_tokens` of the step (below the knee the
  matmuls are memory-bound and hidden in the fixed floor);
- prefill attention: `prefill_attention_ms` per (new token x context token), counting causal context;
- decode attention: `decode_ms_per_kctx` per 1k context tokens of every sequence that decodes this step.
Profiles live in `PROFILES` (name -> Profile); add one by adding an entry. Each states its KV capacity
(vLLM's: gpu-memory-utilization 0.9 of the GPUs' memory, less the weights, over the KV bytes per token; GB =
1e9 bytes), block size and step-time coefficients, and in `source` where they come from; the derivations are
written out below as arithmetic on the published figures (WORKLOADS.md section 2, data/vidur, data/blis).
`kv_bytes_per_token` and `host_link_gb_per_s` size the CPU KV offload tier and time its transfers
(simulator.offload); a profile without them cannot offload.
"""

from __future__ import annotations

import msgspec


class Profile(msgspec.Struct, frozen=True, kw_only=True):
    """A model on a machine: KV capacity, scheduler limits and step-time coefficients."""

    name: str
    source: str  # where the numbers come from
    block_size: int = 16
    kv_capacity_tokens: int
    max_num_batched_tokens: int = 8192
    max_num_seqs: int = 256
    max_model_len: int
    step_fixed_ms: float
    prefill_token_ms: float
    linear_knee_tokens: int = 128
    prefill_attention_ms: float
    decode_ms_per_kctx: float
    # CPU KV offload (simulator.offload): KV bytes per token summed over the replica's GPUs, and the host
    # link's effective bandwidth per direction summed over them (GB/s, 1e9 bytes); 0 = unknown, no offload.
    kv_bytes_per_token: int = 0
    host_link_gb_per_s: float = 0.0

    @property
    def num_gpu_blocks(self) -> int:
        return self.kv_capacity_tokens // self.block_size

    @property
    def kv_bytes_per_block(self) -> int:
        return self.kv_bytes_per_token * self.block_size

    def validate(self) -> None:
        """Raise ValueError when the profile could never run a max-length request."""
        if self.block_size <= 0 or self.num_gpu_blocks <= 0:
            raise ValueError(f"profile {self.name}: needs a positive block size and KV capacity")
        if self.max_model_len > self.num_gpu_blocks * self.block_size:
            raise ValueError(f"profile {self.name}: max_model_len exceeds the KV capacity")
        if self.max_num_batched_tokens <= 0 or self.max_num_seqs <= 0:
            raise ValueError(f"profile {self.name}: needs a positive token budget and sequence cap")
        if self.kv_bytes_per_token < 0 or self.host_link_gb_per_s < 0:
            raise ValueError(f"profile {self.name}: KV bytes per token and host link bandwidth must be >= 0")


def with_kv_capacity(
    profile: Profile, *, num_gpu_blocks: int | None = None, scale: float | None = None
) -> Profile:
    """`profile` with its KV capacity set as vLLM's --num-gpu-blocks-override (`num_gpu_blocks` blocks, one of
    them vLLM's null block) or scaled by `scale` (whole blocks); unchanged when both are None. Raises
    ValueError naming the bad value (validate() then checks that a max-length request still fits)."""
    if num_gpu_blocks is not None and scale is not None:
        raise ValueError("give a KV block count or a KV scale, not both")
    if num_gpu_blocks is not None:
        if num_gpu_blocks < 2:
            raise ValueError(f"KV blocks must be at least 2 (one is vLLM's null block), got {num_gpu_blocks}")
        tokens = (num_gpu_blocks - 1) * profile.block_size
    elif scale is not None:
        if not scale > 0:
            raise ValueError(f"KV scale must be positive, got {scale}")
        tokens = int(profile.kv_capacity_tokens * scale) // profile.block_size * profile.block_size
    else:
        return profile
    return msgspec.structs.replace(profile, kv_capacity_tokens=tokens)


def step_time_s(
    profile: Profile, *, num_tokens: int, attention_pairs: float = 0.0, decode_context_tokens: int = 0
) -> float:
    """Seconds one step takes. `num_tokens`: tokens computed in the step (prefill chunks + one per decoding
    sequence); `attention_pairs`: sum over prefill chunks of new x context token pairs (see
    `prefill_attention_pairs`); `decode_context_tokens`: summed context length of the decoding sequences.
    An empty step (no tokens) takes no time."""
    if num_tokens <= 0:
        return 0.0
    ms = (
        profile.step_fixed_ms
        + profile.prefill_token_ms * max(0, num_tokens - profile.linear_knee_tokens)
        + profile.prefill_attention_ms * attention_pairs
        + profile.decode_ms_per_kctx * decode_context_tokens / 1000.0
    )
    return ms / 1000.0


def chunked_prefill_s(profile: Profile, prompt: int, cached: int = 0) -> float:
    """Seconds to prefill tokens `cached`..`prompt` of a prompt alone on a replica, in chunks of the profile's
    token budget (vLLM's chunked prefill), each attending to everything before it."""
    total, done = 0.0, cached
    while done < prompt:
        chunk = min(profile.max_num_batched_tokens, prompt - done)
        total += step_time_s(profile, num_tokens=chunk, attention_pairs=prefill_attention_pairs(chunk, done))
        done += chunk
    return total


def prefill_attention_pairs(num_new: int, num_context: int) -> float:
    """Token pairs a prefill chunk of `num_new` tokens attends to after `num_context` tokens (causal)."""
    return num_new * (num_context + num_new / 2.0)


def kv_capacity_tokens(
    *, num_gpus: int, gpu_gb: float, weights_gb: float, kv_bytes_per_token: int, block_size: int = 16
) -> int:
    """Tokens of KV that fit: (num_gpus x gpu_gb x 0.9 - weights_gb) / kv_bytes_per_token, in whole blocks."""
    tokens = int((num_gpus * gpu_gb * 0.9 - weights_gb) * 1e9 / kv_bytes_per_token)
    return tokens // block_size * block_size


# Llama-3-70B at TP4 on H100 (data/vidur): the linear layers of 80 layers take ~15.0 ms for 1-64 tokens
# (h100 Llama-2-70b mlp.csv, TP4; same shapes as Llama-3-70B but the vocabulary) and then 0.054 ms per token
# (227.8 ms at 4096); each layer all-reduces twice (160 per step): ~0.040 ms each up to ~128 tokens, then
# 7.4e-5 ms per token of 16 KiB (h100_dgx.all_reduce.csv, 4 workers: 0.318 ms at 4096 tokens).
_L70_LINEAR_FLOOR_MS = 15.0
_L70_LINEAR_TOKEN_MS = 0.054
_L70_ALL_REDUCE_FLOOR_MS = 160 * 0.040
_L70_ALL_REDUCE_TOKEN_MS = 160 * 7.4e-5
# Attention per (new x context) token pair costs 4 x d_model FLOPs per layer: 70B TP4 does 80 x 8192 / 4
# per GPU where 8B does 32 x 4096, i.e. 1.25x the 8B coefficient at the same efficiency (~44% of peak).
_L70_TP4_ATTENTION_MS = 1.2e-6 * (80 * 8192 / 4) / (32 * 4096)
# A100-80GB from H100 (data/blis/hardware_config.json): compute-bound terms by effective prefill FLOPs
# (989.5 TF x 0.45 MFU over 312 TF x 0.38 = 3.76x slower), memory-bound terms by HBM bandwidth (3.35 over
# 2.039 TB/s = 1.64x); the knee (where matmuls turn compute-bound) moves down by 1.64 / 3.76.
_A100_COMPUTE_SLOWDOWN = (989.5 * 0.45) / (312 * 0.38)
_A100_MEMORY_SLOWDOWN = 3.35 / 2.039
# No A100 all-reduce profile in the data: small messages are latency-bound (kept as on H100), large ones
# scale by NVLink 3 vs 4 bandwidth (600 vs 900 GB/s, the vendors' specifications).
_A100_NVLINK_SLOWDOWN = 900 / 600
# Qwen2.5-7B vs Llama-3-8B on one H100: matmul weights read per step 7.07B params (6.53B non-embedding +
# 0.545B lm_head) vs 7.50B (8.03B - 0.525B embedding) scale the weight-streaming floor and the per-token
# linear cost; attention 28 layers x 3584 vs 32 x 4096; KV 56 vs 128 KiB per token scales decode attention.
_QWEN7_OVER_LLAMA8_WEIGHTS = 7.07 / 7.50
# Host link for CPU KV offload, per GPU and direction: PCIe 5.0 x16 (H100) signals 32 GT/s on 16 lanes with
# 128b/130b encoding, 32 x 16 x 128/130 / 8 = 63.0 GB/s (the "64 GB/s" of the PCI-SIG specification); PCIe
# 4.0 x16 (A100) half that. DMA from pinned host memory reaches ~80% of the link (an assumption, in the range
# cudaMemcpy bandwidth tests report on these links; vLLM's offloading connector copies with DMA). A TP group
# moves each GPU's share of the KV over its own link, so the links add up.
_PCIE5_X16_GB_S = 32 * 16 * 128 / 130 / 8
_PCIE4_X16_GB_S = _PCIE5_X16_GB_S / 2
_HOST_LINK_EFFICIENCY = 0.8

PROFILES: dict[str, Profile] = {
    "llama3-8b-h100": Profile(
        name="llama3-8b-h100",
        source=(
            "WORKLOADS.md section 2: Llama-3-8B BF16 on one H100 80GB, vLLM gpu-memory-utilization 0.9; "
            "128 KiB KV per token, ~430k tokens; step floor 7.6 ms, 0.022 ms/prefill token, "
            "1.2e-6 ms per attention pair, 0.07 ms per 1k decode context tokens; Llama 3.1 context 128k; "
            "host link PCIe 5.0 x16 at 80%: 50.4 GB/s"
        ),
        block_size=16,
        kv_capacity_tokens=430_080,
        max_num_batched_tokens=8192,
        max_num_seqs=256,
        max_model_len=131_072,
        step_fixed_ms=7.6,
        prefill_token_ms=0.022,
        linear_knee_tokens=128,
        prefill_attention_ms=1.2e-6,
        decode_ms_per_kctx=0.07,
        kv_bytes_per_token=128 * 1024,
        host_link_gb_per_s=_PCIE5_X16_GB_S * _HOST_LINK_EFFICIENCY,
    ),
    "llama3-70b-tp4-h100": Profile(
        name="llama3-70b-tp4-h100",
        source=(
            "Llama-3.1-70B BF16, TP4 on 4x H100 80GB (WORKLOADS.md section 2, data/vidur): KV 320 KiB/token, "
            "(4 x 80 GB x 0.9 - 140 GB weights) / 327,680 B = 451,660 tokens (WORKLOADS: ~450k); step floor "
            "15.0 ms linear layers (vidur TP4) + 160 all-reduces x 0.040 ms = 21.4 ms; 0.054 ms/prefill "
            "token (vidur linear) + 160 x 7.4e-5 all-reduce = 0.066; attention 1.25x the 8B coefficient "
            "per GPU; decode 45 ns per context token (WORKLOADS); context 128k; host links 4x PCIe 5.0 x16 "
            "at 80%"
        ),
        block_size=16,
        kv_capacity_tokens=kv_capacity_tokens(
            num_gpus=4, gpu_gb=80, weights_gb=140, kv_bytes_per_token=320 * 1024
        ),
        max_model_len=131_072,
        step_fixed_ms=_L70_LINEAR_FLOOR_MS + _L70_ALL_REDUCE_FLOOR_MS,
        prefill_token_ms=_L70_LINEAR_TOKEN_MS + _L70_ALL_REDUCE_TOKEN_MS,
        linear_knee_tokens=128,
        prefill_attention_ms=_L70_TP4_ATTENTION_MS,
        decode_ms_per_kctx=0.045,
        kv_bytes_per_token=320 * 1024,
        host_link_gb_per_s=4 * _PCIE5_X16_GB_S * _HOST_LINK_EFFICIENCY,
    ),
    "llama3-70b-tp4-a100": Profile(
        name="llama3-70b-tp4-a100",
        source=(
            "The SAGA paper's setup: Llama-3-70B BF16, TP4 on 4x A100-80GB; KV as on H100 (same memory): "
            "(4 x 80 GB x 0.9 - 140 GB) / 327,680 B = 451,660 tokens. Coefficients are the H100 TP4 ones "
            "scaled by data/blis/hardware_config.json: compute-bound terms (prefill linear, attention) x3.76 "
            "(effective prefill FLOPs), memory-bound terms (weight-streaming floor, decode attention) x1.64 "
            "(HBM bandwidth), all-reduce per token x1.5 (NVLink 3 vs 4), small all-reduces unchanged; knee "
            "128 x 1.64 / 3.76 = 56 tokens. Cross-check: vidur's measured A100 Llama-3-70B TP4 linear layers "
            "(665 ms at 4096 tokens) are ~30% faster than this scaling gives (920 ms with all-reduce); "
            "host links 4x PCIe 4.0 x16 at 80%"
        ),
        block_size=16,
        kv_capacity_tokens=kv_capacity_tokens(
            num_gpus=4, gpu_gb=80, weights_gb=140, kv_bytes_per_token=320 * 1024
        ),
        max_model_len=131_072,
        step_fixed_ms=_L70_LINEAR_FLOOR_MS * _A100_MEMORY_SLOWDOWN + _L70_ALL_REDUCE_FLOOR_MS,
        prefill_token_ms=_L70_LINEAR_TOKEN_MS * _A100_COMPUTE_SLOWDOWN
        + _L70_ALL_REDUCE_TOKEN_MS * _A100_NVLINK_SLOWDOWN,
        linear_knee_tokens=round(128 * _A100_MEMORY_SLOWDOWN / _A100_COMPUTE_SLOWDOWN),
        prefill_attention_ms=_L70_TP4_ATTENTION_MS * _A100_COMPUTE_SLOWDOWN,
        decode_ms_per_kctx=0.045 * _A100_MEMORY_SLOWDOWN,
        kv_bytes_per_token=320 * 1024,
        host_link_gb_per_s=4 * _PCIE4_X16_GB_S * _HOST_LINK_EFFICIENCY,
    ),
    "qwen2.5-7b-h100": Profile(
        name="qwen2.5-7b-h100",
        source=(
            "Qwen2.5-7B BF16 on one H100 80GB: KV 56 KiB/token (28 layers x 4 KV heads x 128 x 2 x 2 B), "
            "(80 GB x 0.9 - 15.23 GB weights) / 57,344 B = 989,990 tokens (WORKLOADS: ~1.0M); coefficients "
            "from llama3-8b-h100 scaled by model shape: floor 6.5 ms x 7.07/7.50 (matmul weights) + 1.1 ms "
            "overhead, 0.022 ms/prefill token x 7.07/7.50, attention x (28 x 3584)/(32 x 4096), decode "
            "0.07 ms/1k context x 56/128 (KV bytes); context 32k; host link PCIe 5.0 x16 at 80%"
        ),
        block_size=16,
        kv_capacity_tokens=kv_capacity_tokens(
            num_gpus=1, gpu_gb=80, weights_gb=15.23, kv_bytes_per_token=56 * 1024
        ),
        max_model_len=32_768,
        step_fixed_ms=6.5 * _QWEN7_OVER_LLAMA8_WEIGHTS + 1.1,
        prefill_token_ms=0.022 * _QWEN7_OVER_LLAMA8_WEIGHTS,
        linear_knee_tokens=128,
        prefill_attention_ms=1.2e-6 * (28 * 3584) / (32 * 4096),
        decode_ms_per_kctx=0.07 * 56 / 128,
        kv_bytes_per_token=56 * 1024,
        host_link_gb_per_s=_PCIE5_X16_GB_S * _HOST_LINK_EFFICIENCY,
    ),
    "llama3-8b-h200": Profile(
        name="llama3-8b-h200",
        source=(
            "Measured, not derived: a Llama-3-8B-shaped decoder (random BF16 weights, PyTorch 2.11 "
            "cuBLAS and cuDNN attention, CUDA graphs) on one H200 141 GB, 45 engine steps fitted by "
            "simulator/calibration.py (docs/results/gpu-h200: every step within 14%, the held-out mixed "
            "steps within 5%); (141 GB x 0.9 - 16 GB weights) / 131,072 B per token; host link: 2 MiB "
            "block copies from pinned memory measured at 51.2 GB/s per direction. PyTorch's unfused norms "
            "and activations make the per-token cost an upper bound for vLLM's fused kernels"
        ),
        block_size=16,
        kv_capacity_tokens=kv_capacity_tokens(
            num_gpus=1, gpu_gb=141, weights_gb=16, kv_bytes_per_token=128 * 1024
        ),
        max_model_len=131_072,
        step_fixed_ms=5.80,
        prefill_token_ms=0.0242,
        linear_knee_tokens=64,
        prefill_attention_ms=9.3e-7,
        decode_ms_per_kctx=0.0287,
        kv_bytes_per_token=128 * 1024,
        host_link_gb_per_s=51.2,
    ),
    "tiny-cpu": Profile(
        name="tiny-cpu",
        source=(
            "vLLM's CPU backend (tests/real_vllm) with a tiny random Llama (2 layers, hidden 128), "
            "block size 128, --max-model-len 2048, ~50 ms per 1000-token prompt; KV kept small (32 blocks) "
            "so eviction and preemption show up with a few requests; "
            "KV 2 layers x (K, V) x 4 heads x 32 x 4 B = 2 KiB per token; "
            "host link 10 GB/s is a placeholder (vLLM's CPU build cannot offload, docs/offload.md)"
        ),
        block_size=128,
        kv_capacity_tokens=32 * 128,
        max_num_batched_tokens=2048,
        max_num_seqs=64,
        max_model_len=2048,
        step_fixed_ms=2.0,
        prefill_token_ms=0.046,
        linear_knee_tokens=0,
        prefill_attention_ms=3e-6,
        decode_ms_per_kctx=0.05,
        kv_bytes_per_token=2 * 2 * 4 * 32 * 4,
        host_link_gb_per_s=10.0,
    ),
}


def get_profile(name: str) -> Profile:
    """The profile called `name`; raises ValueError naming the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown simulator profile {name!r}; known: {sorted(PROFILES)}") from None
