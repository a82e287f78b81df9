"""Measure, on a real GPU, the step-time terms that `simulator.cost_model` models, and the host link that
`simulator.offload` times: raw measurements as JSON, fitted and compared by `simulator.calibration`.

Contract: `python3 simulator/gpu_probe.py --json OUT [--tiny]` runs with PyTorch and the standard library
alone (it is carried to GPU machines that have neither msgspec nor this project installed; keep it so) and
writes one JSON object: `machine` (device, torch, date), `model` (the shapes), `steps` (one row per measured
engine step: what the step held and its median milliseconds) and `host_link` (copy bandwidths).

What a step is: one forward pass of a Llama-shaped decoder with random bf16 weights, as vLLM's model runner
would run it, captured once as a CUDA graph and replayed (vLLM replays graphs for decode; for big prefills
the graph only removes launch gaps that the kernels' length hides anyway), timed with CUDA events:
- `linear`: T tokens through every layer's projections and MLP, no attention (the weight-streaming floor and
  the per-token linear cost of the cost model);
- `prefill`: T new tokens with causal attention among themselves (T x T / 2 attention pairs);
- `context`: a T-token chunk attending to C cached tokens and itself, non-causal (T x (C + T) pairs: the
  pairs the kernel computes, which is what the fit needs);
- `decode`: B sequences of L cached tokens, one new token each (B x L decode context tokens);
- `mixed`: a prefill chunk and a decode batch in one step, to check that the terms add up.
The KV of a step is one tensor shared by all layers: the bytes each layer reads are the same as with 32
separate caches (all far larger than L2), and it saves memory. Kernels are PyTorch's (cuBLAS, and SDPA's
flash attention where it takes the shape), not vLLM's fused ones; `calibration` reports the fit, not a claim
that vLLM matches it to the percent. `--tiny` runs a small model on whatever device there is (CPU included,
timed by the wall clock): a smoke test of this script, not a measurement.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

LLAMA3_8B = {
    "name": "llama3-8b",
    "hidden": 4096,
    "layers": 32,
    "heads": 32,
    "kv_heads": 8,
    "head_dim": 128,
    "intermediate": 14336,
    "vocab": 128256,
}
# One tensor-parallel rank of Llama-3-70B at TP4: a quarter of the heads, of the MLP and of the vocabulary
# (vLLM's column/row-parallel split); the two all-reduces per layer are not run (one GPU), so its steps are
# the TP4 profile's less its all-reduce terms.
LLAMA3_70B_TP4_RANK = {
    "name": "llama3-70b-tp4-rank",
    "hidden": 8192,
    "layers": 80,
    "heads": 16,
    "kv_heads": 2,
    "head_dim": 128,
    "intermediate": 7168,
    "vocab": 32064,
}
TINY = {
    "name": "tiny",
    "hidden": 256,
    "layers": 2,
    "heads": 4,
    "kv_heads": 2,
    "head_dim": 64,
    "intermediate": 512,
    "vocab": 1000,
}


_MODELS = [LLAMA3_8B, LLAMA3_70B_TP4_RANK]
_BACKENDS = [
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.CUDNN_ATTENTION,
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.MATH,
]


class Model:
    """Random weights of a Llama-shaped decoder; `step` runs one engine step over prepared inputs."""

    def __init__(self, shape: dict[str, Any], device: torch.device, dtype: torch.dtype) -> None:
        self.shape = shape
        self.device = device
        self.dtype = dtype
        hidden, inter = shape["hidden"], shape["intermediate"]
        qkv = (shape["heads"] + 2 * shape["kv_heads"]) * shape["head_dim"]

        def weight(rows: int, cols: int) -> torch.Tensor:
            return torch.randn(rows, cols, device=device, dtype=dtype) * 0.02

        self.layers = [
            {
                "norm1": torch.ones(hidden, device=device, dtype=dtype),
                "qkv": weight(hidden, qkv),
                "o": weight(shape["heads"] * shape["head_dim"], hidden),
                "norm2": torch.ones(hidden, device=device, dtype=dtype),
                "gate_up": weight(hidden, 2 * inter),
                "down": weight(inter, hidden),
            }
            for _ in range(shape["layers"])
        ]
        self.lm_head = weight(hidden, shape["vocab"])

    def params(self) -> int:
        per_layer = sum(t.numel() for name, t in self.layers[0].items() if not name.startswith("norm"))
        return per_layer * len(self.layers) + self.lm_head.numel()

    def step(
        self,
        x: torch.Tensor,
        attend: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None,
        logit_rows: int,
    ) -> torch.Tensor:
        """One forward pass of x ([tokens, hidden]); `attend(q, k, v)` maps the new tokens' projections to the
        attention output ([tokens, heads * head_dim]); None skips attention (the output is q)."""
        s = self.shape
        q_width, kv_width = s["heads"] * s["head_dim"], s["kv_heads"] * s["head_dim"]
        for layer in self.layers:
            h = rms_norm(x, layer["norm1"])
            qkv = h @ layer["qkv"]
            q, k, v = qkv.split([q_width, kv_width, kv_width], dim=-1)
            attn = q if attend is None else attend(q, k, v)
            x = x + attn @ layer["o"]
            h = rms_norm(x, layer["norm2"])
            gate, up = (h @ layer["gate_up"]).chunk(2, dim=-1)
            x = x + (F.silu(gate) * up) @ layer["down"]
        return x[-logit_rows:] @ self.lm_head


def rms_norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    variance = x.float().pow(2).mean(-1, keepdim=True)
    return (x.float() * torch.rsqrt(variance + 1e-5)).to(x.dtype) * weight


class Attention:
    """The attention a step runs, over KV tensors made once per shape (shared by all layers)."""

    def __init__(self, model: Model) -> None:
        self.s = model.shape
        self.device, self.dtype = model.device, model.dtype

    def _heads(self, t: torch.Tensor, heads: int) -> torch.Tensor:
        # [tokens, heads * head_dim] -> [1, heads, tokens, head_dim]
        return t.view(-1, heads, self.s["head_dim"]).transpose(0, 1).unsqueeze(0)

    def _flat(self, out: torch.Tensor) -> torch.Tensor:
        # [batch, heads, tokens, head_dim] -> [batch * tokens, heads * head_dim]
        b, h, n, d = out.shape
        return out.transpose(1, 2).reshape(b * n, h * d)

    def cache(self, batch: int, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (batch, self.s["kv_heads"], tokens, self.s["head_dim"])
        return (
            torch.randn(shape, device=self.device, dtype=self.dtype),
            torch.randn(shape, device=self.device, dtype=self.dtype),
        )

    def prefill(self) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            out = F.scaled_dot_product_attention(
                self._heads(q, self.s["heads"]),
                self._heads(k, self.s["kv_heads"]),
                self._heads(v, self.s["kv_heads"]),
                is_causal=True,
                enable_gqa=True,
            )
            return self._flat(out)

        return attend

    def context(
        self, chunk: int, cached: int
    ) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        k_cache, v_cache = self.cache(1, cached + chunk)

        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            k_cache[:, :, cached:, :] = self._heads(k, self.s["kv_heads"])
            v_cache[:, :, cached:, :] = self._heads(v, self.s["kv_heads"])
            out = F.scaled_dot_product_attention(
                self._heads(q, self.s["heads"]), k_cache, v_cache, enable_gqa=True
            )
            return self._flat(out)

        return attend

    def decode(
        self, batch: int, length: int
    ) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        k_cache, v_cache = self.cache(batch, length)

        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            # the new token's k and v would be written at position `length`; one token's write is negligible
            qb = q.view(batch, self.s["heads"], 1, self.s["head_dim"])
            out = F.scaled_dot_product_attention(qb, k_cache, v_cache, enable_gqa=True)
            return self._flat(out)

        return attend

    def mixed(
        self, chunk: int, batch: int, length: int
    ) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        prefill, decode = self.prefill(), self.decode(batch, length)

        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            head = prefill(q[:chunk], k[:chunk], v[:chunk])
            tail = decode(q[chunk:], k[chunk:], v[chunk:])
            return torch.cat([head, tail])

        return attend


def time_step(fn: Callable[[], torch.Tensor], device: torch.device, repeats: int) -> tuple[float, str]:
    """Median milliseconds of `fn`, and how it was timed: a replayed CUDA graph timed by CUDA events on a GPU
    (eager with events if capture fails), the wall clock elsewhere."""
    if device.type != "cuda":
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
        return statistics.median(times), "wall-clock"
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    run: Callable[[], Any]
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        run, how = graph.replay, "cuda-graph"
    except Exception as exc:  # any capture failure falls back to eager timing, and says so
        torch.cuda.synchronize()
        run, how = fn, f"eager ({type(exc).__name__})"
    run()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    del run
    torch.cuda.empty_cache()
    return statistics.median(times), how


def step_rows(model: Model, tiny: bool) -> list[dict[str, Any]]:
    """The steps to measure: kind, new tokens, attention pairs, decode context tokens, logit rows, and `make`,
    which builds the step's attention (its KV tensors) when the step is about to run."""
    attn = Attention(model)
    rows: list[dict[str, Any]] = []

    def add(
        kind: str, tokens: int, pairs: float, decode_ctx: int, logits: int, make: Any, **what: int
    ) -> None:
        rows.append(
            {
                "kind": kind,
                "tokens": tokens,
                "attention_pairs": pairs,
                "decode_context_tokens": decode_ctx,
                "logit_rows": logits,
                "make": make,
                **what,
            }
        )

    linear = (
        [1, 8, 32, 64, 128, 256, 512]
        if tiny
        else [1, 8, 16, 32, 64, 96, 128, 192, 256, 384, 512, 1024, 2048, 4096, 8192]
    )
    for t in linear:
        add("linear", t, 0.0, 0, 1, lambda: None)
    for t in [128, 256] if tiny else [512, 1024, 2048, 4096, 8192]:
        add("prefill", t, t * t / 2.0, 0, 1, attn.prefill)
    contexts = (
        [(128, 256)] if tiny else [(2048, 6144), (2048, 30720), (8192, 8192), (8192, 24576), (8192, 57344)]
    )
    for t, c in contexts:
        add("context", t, float(t * (c + t)), 0, 1, lambda t=t, c=c: attn.context(t, c), cached=c)
    decodes = (
        [(4, 256)]
        if tiny
        else [(b, n) for b in (1, 8, 32, 128, 256) for n in (512, 2048, 8192, 32768) if b * n <= 2_097_152]
    )
    for b, n in decodes:
        add("decode", b, 0.0, b * n, b, lambda b=b, n=n: attn.decode(b, n), batch=b, length=n)
    mixes = [(128, 4, 256)] if tiny else [(2048, 64, 4096), (512, 128, 2048)]
    for t, b, n in mixes:
        add(
            "mixed",
            t + b,
            t * t / 2.0,
            b * n,
            b + 1,
            lambda t=t, b=b, n=n: attn.mixed(t, b, n),
            chunk=t,
            batch=b,
            length=n,
        )
    return rows


def measure_steps(model: Model, tiny: bool, repeats: int, first: str) -> list[dict[str, Any]]:
    backends = sorted(_BACKENDS, key=lambda b: b.name != first)
    out = []
    for row in step_rows(model, tiny):
        attend = row.pop("make")()
        x = torch.randn(row["tokens"], model.shape["hidden"], device=model.device, dtype=model.dtype) * 0.1
        row.update(time_backends(model, x, attend, row["logit_rows"], backends, repeats))
        del attend, x
        if model.device.type == "cuda":
            torch.cuda.empty_cache()
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def time_backends(
    model: Model,
    x: torch.Tensor,
    attend: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None,
    logit_rows: int,
    backends: list[SDPBackend],
    repeats: int,
) -> dict[str, Any]:
    """Time one step with the first attention kernel in `backends` that takes its shape (math, the slow
    reference, last); the kernels that refused are named. A step no kernel runs is reported, never hidden."""
    errors = []
    for backend in backends if attend is not None else [None]:

        def step(backend: SDPBackend | None = backend) -> torch.Tensor:
            if backend is None:
                return model.step(x, attend, logit_rows)
            with sdpa_kernel([backend]):
                return model.step(x, attend, logit_rows)

        try:
            ms, how = time_step(step, model.device, repeats)
        except Exception as exc:
            errors.append(f"{getattr(backend, 'name', 'none')}: {type(exc).__name__}: {exc}"[:200])
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            continue
        return {
            "ms": ms,
            "timing": how,
            "attention": getattr(backend, "name", None),
            "skipped_backends": errors,
        }
    return {"ms": None, "error": " | ".join(errors)}


def measure_host_link(device: torch.device, tiny: bool) -> dict[str, Any]:
    """Copy bandwidth between host and GPU memory (GB/s, 1e9 bytes): one large copy each way, and the same
    bytes as KV-block-sized copies (one block of all layers: 16 tokens x 128 KiB = 2 MiB; one block of one
    layer's K: 16 x 8 heads x 128 x 2 bytes = 32 KiB), pinned host memory where it can be had."""
    if device.type != "cuda":
        return {"skipped": "no GPU"}
    total = (64 if tiny else 1024) * 2**20
    result: dict[str, Any] = {"bytes": total}
    try:
        host = torch.empty(total, dtype=torch.uint8, pin_memory=True)
        result["pinned"] = True
    except Exception as exc:  # pageable memory still gives a (lower) figure
        host = torch.empty(total, dtype=torch.uint8)
        result["pinned"] = f"no ({type(exc).__name__})"
    gpu = torch.empty(total, dtype=torch.uint8, device=device)

    def bandwidth(copy: Callable[[], None]) -> float:
        copy()
        torch.cuda.synchronize()
        times = []
        for _ in range(5):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            copy()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        return total / statistics.median(times) / 1e9

    for label, chunk in (("whole", total), ("block_2MiB", 2 * 2**20), ("layer_block_32KiB", 32 * 2**10)):
        n = total // chunk
        host_parts = [host[i * chunk : (i + 1) * chunk] for i in range(n)]
        gpu_parts = [gpu[i * chunk : (i + 1) * chunk] for i in range(n)]

        def h2d(hp: list[torch.Tensor] = host_parts, gp: list[torch.Tensor] = gpu_parts) -> None:
            for h, g in zip(hp, gp, strict=False):
                g.copy_(h, non_blocking=True)

        def d2h(hp: list[torch.Tensor] = host_parts, gp: list[torch.Tensor] = gpu_parts) -> None:
            for h, g in zip(hp, gp, strict=False):
                h.copy_(g, non_blocking=True)

        result[label] = {"copies": n, "h2d_gb_s": bandwidth(h2d), "d2h_gb_s": bandwidth(d2h)}
        print(json.dumps({label: result[label]}), flush=True)
    return result


def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        try:
            info["nvidia_smi"] = subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=name,memory.total,driver_version,clocks.max.sm",
                    "--format=csv,noheader",
                ],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            info["nvidia_smi"] = f"unavailable: {exc}"
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="where to write the measurements")
    parser.add_argument("--tiny", action="store_true", help="a small model: a smoke test, not a measurement")
    parser.add_argument(
        "--model", default="llama3-8b", choices=[m["name"] for m in _MODELS], help="the decoder's shapes"
    )
    parser.add_argument("--repeats", type=int, default=15, help="timed repetitions per step (median kept)")
    parser.add_argument(
        "--attention",
        default="FLASH_ATTENTION",
        choices=[b.name for b in _BACKENDS],
        help="SDPA backend tried first (the others follow, in the order flash, cudnn, efficient, math)",
    )
    parser.add_argument("--no-host-link", action="store_true", help="skip the host link copies")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    shape = TINY if args.tiny else next(m for m in _MODELS if m["name"] == args.model)
    t0 = time.perf_counter()
    model = Model(shape, device, dtype)
    result: dict[str, Any] = {
        "machine": machine_info(device),
        "model": {**shape, "dtype": str(dtype).removeprefix("torch."), "params": model.params()},
        "sdpa_backends": sdpa_backends(),
    }
    print(json.dumps(result), flush=True)
    result["host_link"] = (
        measure_host_link(device, args.tiny) if not args.no_host_link else {"skipped": "asked"}
    )
    result["steps"] = measure_steps(model, args.tiny, args.repeats, args.attention)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    failed = [r for r in result["steps"] if r["ms"] is None]
    print(f"wrote {args.json}: {len(result['steps'])} steps ({len(failed)} failed) in {result['seconds']} s")
    return 1 if failed else 0


def sdpa_backends() -> dict[str, bool]:
    if not torch.cuda.is_available():
        return {}
    b = torch.backends.cuda
    return {
        "flash": b.flash_sdp_enabled(),
        "mem_efficient": b.mem_efficient_sdp_enabled(),
        "cudnn": b.cudnn_sdp_enabled(),
        "math": b.math_sdp_enabled(),
    }


if __name__ == "__main__":
    sys.exit(main())
