"""The routers `saga bench live` compares: SAGA itself and the peers users would pick, run from pip.

Contract: a router is named `KIND:POLICY` — `saga:<any SAGA policy>` (plain `saga` is the default policy;
`+kv-events` after the policy subscribes SAGA to the replicas' KV-cache events, its `kv_events`),
`vllm-router:<round_robin|consistent_hash|cache_aware|cache_aware_balanced|kv_aware|power_of_two|program>`
(`program` is vllm-router's agent-aware program scheduling; `cache_aware_balanced` its `cache_aware` with the
load-balance thresholds lowered to this harness's scale: by default it balances only once one worker has 64
more requests than another, which tens of agents never reach, so every task sharing a system prompt went
to one replica) and `sglang-router:<cache_aware|round_robin|power_of_two>`.
`unavailable(spec)` says why a router cannot run here (a peer not installed) or None; `peer_command` builds a
peer's command line. Peers' own time parameters are wall-clock seconds: with replicas `time_scale` times
faster than real time they are scaled by 1/time_scale, so every router sees the same workload time.
vllm-router's retries and circuit breaker are turned off so the comparison is of routing alone;
sglang-router runs with its own (which can only hide failures in its favour).
"""

from __future__ import annotations

import importlib.util
import json
import sys

import msgspec

from loadtests.bench.ablation import split_variant

KINDS = {"saga": None, "vllm-router": "vllm_router", "sglang-router": "sglang_router"}
VLLM_ROUTER_POLICIES = (
    "round_robin",
    "consistent_hash",
    "cache_aware",
    "cache_aware_balanced",
    "kv_aware",
    "power_of_two",
    "program",
)
SGLANG_ROUTER_POLICIES = ("cache_aware", "round_robin", "power_of_two", "random")
DEFAULT_SAGA_POLICY = "session-affinity"


class RouterSpec(msgspec.Struct, frozen=True):
    kind: str
    policy: str

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.policy}"


def parse_router(text: str) -> RouterSpec:
    kind, _, policy = text.partition(":")
    if kind not in KINDS:
        raise ValueError(f"unknown router {kind!r} in {text!r}; known: {', '.join(KINDS)}")
    if kind == "saga":
        return RouterSpec(kind, policy or DEFAULT_SAGA_POLICY)
    known = VLLM_ROUTER_POLICIES if kind == "vllm-router" else SGLANG_ROUTER_POLICIES
    if policy not in known:
        raise ValueError(f"{kind} has no policy {policy!r}; known: {', '.join(known)}")
    return RouterSpec(kind, policy)


def unavailable(spec: RouterSpec) -> str | None:
    module = KINDS[spec.kind]
    if module is not None and importlib.util.find_spec(module) is None:
        return f"python package {module} is not installed (pip install -e '.[peers]')"
    return None


def needs_kv_events(spec: RouterSpec) -> bool:
    if (
        spec.kind == "saga"
    ):  # `<policy>+kv-events`, as `saga bench des` names it (loadtests/bench/ablation.py)
        return bool(split_variant(spec.policy)[1].get("kv_events"))
    return spec.kind == "vllm-router" and spec.policy == "kv_aware"


def saga_policy(spec: RouterSpec) -> str:
    """The SAGA policy a `saga:` router runs (its name less a `+kv-events`)."""
    return split_variant(spec.policy)[0]


def peer_command(
    spec: RouterSpec,
    worker_urls: list[str],
    *,
    port: int,
    metrics_port: int,
    time_scale: float,
    kv_event_sources: dict[str, str] | None = None,
    block_size: int = 16,
    model: str = "saga-sim",
) -> list[str]:
    """The command line that starts peer `spec` on 127.0.0.1:`port` in front of `worker_urls`."""
    if spec.kind == "sglang-router":
        return [
            sys.executable, "-m", "sglang_router.launch_router",
            "--host", "127.0.0.1", "--port", str(port),
            "--worker-urls", *worker_urls,
            "--policy", spec.policy,
            "--prometheus-port", str(metrics_port),
        ]  # fmt: skip
    cmd = [
        sys.executable, "-m", "vllm_router.launch_router",
        "--host", "127.0.0.1", "--port", str(port),
        "--worker-urls", *worker_urls,
        "--prometheus-port", str(metrics_port),
        "--disable-retries", "--disable-circuit-breaker",
        "--log-level", "warning",
    ]  # fmt: skip
    if spec.policy == "program":
        config = {
            "program_scheduling_enable_key": "auto",
            "global_queue": True,
            # Its "progress TTL" keeps a program's slot during a tool call: 10 s of workload time.
            "max_acting_ttl_seconds": 10.0 / time_scale,
        }
        cmd += ["--policy", "round_robin", "--enable-program-scheduling"]
        cmd += ["--program-scheduling-config-json", json.dumps(config)]
        return cmd
    if spec.policy == "cache_aware_balanced":  # balance once loads differ by 2 calls and 20%
        cmd += ["--policy", "cache_aware", "--balance-abs-threshold", "2", "--balance-rel-threshold", "1.2"]
        return cmd
    cmd += ["--policy", spec.policy]
    if spec.policy == "kv_aware":
        cmd += ["--kv-aware-session-affinity-ttl-secs", f"{max(1.0, 300.0 / time_scale):g}"]
        cmd += ["--kv-event-block-size", str(block_size), "--kv-event-model", model]
        for url, endpoint in (kv_event_sources or {}).items():
            cmd += ["--kv-event-source", f"{url}={endpoint}"]
    return cmd
