"""Fit `simulator.cost_model`'s step-time terms to a real GPU's measurements (`simulator.gpu_probe`), and say
how far a profile's predictions are from them.

Contract: `fit(steps)` takes the probe's step rows (dicts with kind, tokens, attention_pairs,
decode_context_tokens and ms; rows whose ms is None failed and are reported, not fitted) and returns a `Fit`:
the floor, the per-token linear cost past a knee, the cost per attention pair and the cost per 1k decode
context tokens, fitted together by least squares on every step's relative error (so a 5 ms decode step counts
as much as a 1 s prefill); the knee is the measured `linear` token count that fits best.
The `mixed` rows (a prefill chunk and a decode batch in one step) are left out of the fit: `compare` predicts
them as a check that the terms add up. `compare(steps, profile)` gives each row's measured and predicted
milliseconds; `retention_costs` gives what a dropped prefix costs to bring back: re-prefilled in the profile's
chunks, or reloaded over the measured host link. Pure functions; `main` prints a Markdown report.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable
from typing import Any

import msgspec
import numpy as np

from simulator.cost_model import PROFILES, Profile, chunked_prefill_s, step_time_s


class Fit(msgspec.Struct, frozen=True, kw_only=True):
    step_fixed_ms: float
    prefill_token_ms: float
    linear_knee_tokens: int
    prefill_attention_ms: float
    decode_ms_per_kctx: float

    @property
    def attention_tokens(self) -> float:
        """Context at which a prefill token's attention costs as much as its linear layers (the scheduler's
        `attention_tokens`: proxy/scheduler/prefill_rate.py)."""
        return (
            self.prefill_token_ms / self.prefill_attention_ms if self.prefill_attention_ms > 0 else math.inf
        )

    def as_profile(self, base: Profile) -> Profile:
        return msgspec.structs.replace(
            base,
            step_fixed_ms=self.step_fixed_ms,
            prefill_token_ms=self.prefill_token_ms,
            linear_knee_tokens=self.linear_knee_tokens,
            prefill_attention_ms=self.prefill_attention_ms,
            decode_ms_per_kctx=self.decode_ms_per_kctx,
        )


def measured(steps: Iterable[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    """The rows of these kinds that were measured (ms None: failed, left out); a measurement that is not a
    positive finite number is an error naming its row (the fit divides by it)."""
    rows = [s for s in steps if s["kind"] in kinds and s.get("ms") is not None]
    for row in rows:
        ms = row["ms"]
        if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not 0 < ms < math.inf:
            step = f"{row['kind']} {row.get('tokens')}"
            raise ValueError(f"step {step}: ms must be a positive number, got {ms!r}")
    return rows


def _design(rows: list[dict[str, Any]], knee: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's terms (1, tokens past the knee, attention pairs, decode context in 1k tokens) and its ms,
    both divided by the ms: least squares on them minimises the relative error of every step alike."""
    ms = np.array([r["ms"] for r in rows], dtype=float)
    terms = np.array(
        [
            [
                1.0,
                max(0, r["tokens"] - knee),
                float(r["attention_pairs"]),
                r["decode_context_tokens"] / 1000.0,
            ]
            for r in rows
        ],
        dtype=float,
    )
    return terms / ms[:, None], np.ones_like(ms)


def fit(steps: list[dict[str, Any]]) -> Fit:
    rows = measured(steps, "linear", "prefill", "context", "decode")
    linear = measured(steps, "linear")
    if len(linear) < 3:
        raise ValueError("need at least three measured linear steps to fit the floor and per-token cost")
    kinds = {r["kind"] for r in rows}
    # a term no row exercises is not fitted (its column would be all zeros): it is reported as 0
    used = [True, True, bool(kinds & {"prefill", "context"}), "decode" in kinds]
    best: tuple[float, int, np.ndarray] | None = None
    for knee in sorted({r["tokens"] for r in linear})[:-2]:
        a, b = _design(rows, knee)
        coef = np.zeros(4)
        coef[used], *_ = np.linalg.lstsq(a[:, used], b, rcond=None)
        error = float(np.sum((a @ coef - b) ** 2))
        if best is None or error < best[0]:
            best = (error, knee, coef)
    assert best is not None
    _, knee, coef = best
    return Fit(
        step_fixed_ms=float(coef[0]),
        prefill_token_ms=float(coef[1]),
        linear_knee_tokens=knee,
        prefill_attention_ms=max(0.0, float(coef[2])),
        decode_ms_per_kctx=max(0.0, float(coef[3])),
    )


def predict_ms(profile: Profile, row: dict[str, Any]) -> float:
    return 1000.0 * step_time_s(
        profile,
        num_tokens=row["tokens"],
        attention_pairs=float(row["attention_pairs"]),
        decode_context_tokens=row["decode_context_tokens"],
    )


def compare(steps: list[dict[str, Any]], profiles: dict[str, Profile]) -> list[dict[str, Any]]:
    """Each measured row with every profile's prediction (ms) and its ratio to the measurement."""
    out = []
    for row in steps:
        if row.get("ms") is None:
            out.append({**row, "predicted": {}})
            continue
        predicted = {name: predict_ms(p, row) for name, p in profiles.items()}
        out.append({**row, "predicted": predicted, "ratio": {n: v / row["ms"] for n, v in predicted.items()}})
    return out


def recompute_s(profile: Profile, tokens: int) -> float:
    """Seconds to re-prefill a `tokens`-token prefix alone on a replica, in the profile's chunks."""
    return chunked_prefill_s(profile, tokens)


def retention_costs(
    profile: Profile, kv_bytes_per_token: int, link_gb_s: float, sizes: Iterable[int]
) -> list[dict[str, float]]:
    """Per prefix size: re-prefill seconds, reload seconds over the host link, and their ratio."""
    rows = []
    for tokens in sizes:
        recompute = recompute_s(profile, tokens)
        reload = tokens * kv_bytes_per_token / (link_gb_s * 1e9) if link_gb_s > 0 else math.inf
        rows.append(
            {"tokens": tokens, "recompute_s": recompute, "reload_s": reload, "ratio": recompute / reload}
        )
    return rows


def _describe(row: dict[str, Any]) -> str:
    kind = row["kind"]
    if kind in ("linear", "prefill"):
        return f"{kind} {row['tokens']}"
    if kind == "context":
        return f"context {row['tokens']} after {row['cached']}"
    if kind == "decode":
        return f"decode {row['batch']} x {row['length']}"
    return f"mixed {row['chunk']} + decode {row['batch']} x {row['length']}"


def report(probe: dict[str, Any], base: str) -> str:
    steps = probe["steps"]
    fitted = fit(steps)
    profile = PROFILES[base]
    profiles = {base: profile, "fit": fitted.as_profile(profile)}
    machine, model = probe["machine"], probe["model"]
    lines = [
        f"Probe: {machine.get('gpu', machine['device'])}, torch {machine['torch']}, "
        f"{model['name']} {model['dtype']}, {machine['date']}",
        "",
        "| term | profile `" + base + "` | fitted to the probe | fitted / profile |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name in (
        "step_fixed_ms",
        "prefill_token_ms",
        "linear_knee_tokens",
        "prefill_attention_ms",
        "decode_ms_per_kctx",
    ):
        p, f = getattr(profile, name), getattr(fitted, name)
        lines.append(f"| `{name}` | {p:.4g} | {f:.4g} | {f / p:.2f} |")
    p_att = profile.prefill_token_ms / profile.prefill_attention_ms
    lines.append(
        f"| attention_tokens (derived) | {p_att:,.0f} | {fitted.attention_tokens:,.0f} | "
        f"{fitted.attention_tokens / p_att:.2f} |"
    )
    lines += [
        "",
        "| step | measured ms | `" + base + "` ms (ratio) | fit ms (ratio) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in compare(steps, profiles):
        if row.get("ms") is None:
            lines.append(f"| {_describe(row)} | failed: {row.get('error', '?')} | | |")
            continue
        pb, pf = row["predicted"][base], row["predicted"]["fit"]
        rb, rf = row["ratio"][base], row["ratio"]["fit"]
        mark = " (held out)" if row["kind"] == "mixed" else ""
        lines.append(
            f"| {_describe(row)}{mark} | {row['ms']:.2f} | {pb:.2f} ({rb:.2f}) | {pf:.2f} ({rf:.2f}) |"
        )
    link = probe.get("host_link", {})
    if "whole" in link:
        lines += [
            "",
            f"Host link (pinned: {link.get('pinned')}), GB/s; profile `{base}` assumes "
            f"{profile.host_link_gb_per_s:.1f} per direction:",
            "",
            "| copies | host to GPU | GPU to host |",
            "| --- | ---: | ---: |",
        ]
        for label in ("whole", "block_2MiB", "layer_block_32KiB"):
            if label in link:
                c = link[label]
                lines.append(f"| {c['copies']} x {label} | {c['h2d_gb_s']:.1f} | {c['d2h_gb_s']:.1f} |")
        reload_gb_s = min(link["block_2MiB"]["h2d_gb_s"], link["whole"]["h2d_gb_s"])
        lines += [
            "",
            "A dropped prefix brought back: re-prefilled (in the profile's chunks) or reloaded (2 MiB "
            "blocks, host to GPU):",
            "",
            "| prefix tokens | re-prefill s (fit) | reload s (measured link) | re-prefill / reload | "
            f"`{base}` ratio |",
            "| ---: | ---: | ---: | ---: | ---: |",
        ]
        sizes = (1024, 4096, 16384, 65536)
        for got, want in zip(
            retention_costs(profiles["fit"], profile.kv_bytes_per_token, reload_gb_s, sizes),
            retention_costs(profile, profile.kv_bytes_per_token, profile.host_link_gb_per_s, sizes),
            strict=True,
        ):
            lines.append(
                f"| {got['tokens']:,} | {got['recompute_s']:.3f} | {got['reload_s']:.4f} | "
                f"{got['ratio']:.1f} | {want['ratio']:.1f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fit the cost model to a GPU probe's measurements")
    parser.add_argument("probe", help="JSON written by simulator/gpu_probe.py")
    parser.add_argument(
        "--profile", default="llama3-8b-h100", choices=sorted(PROFILES), help="profile to compare"
    )
    args = parser.parse_args(argv)
    with open(args.probe) as f:
        probe = json.load(f)
    print(report(probe, args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
