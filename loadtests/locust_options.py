"""The locustfile's own command-line options (also shown in Locust's web UI) and the task stream of one user.

Contract:
- `add_options(parser)` registers `--workload`, `--tenant-mix`, `--time-scale`, `--model`, `--shape`,
  `--no-stream`, `--request-timeout`, `--agent-seed` and `--no-session-end` on Locust's parser;
  `LocustOptions.of(environment)` reads them back, with the defaults when Locust runs without a command
  line (the library API).
- `parse_tenant_mix(text)` takes a preset name (`TENANT_MIXES`) or `tenant:weight[:slo_class[:workload]],...`
  and raises ValueError naming the bad item; a stream without a workload runs its user's workload.
- `TaskSource` hands one user an endless, seeded stream of agent tasks from `loadtests.workloads`: each task's
  tenant is drawn by weight from the mix, its session id is unique across users and Locust processes.
"""

from __future__ import annotations

import difflib
import math
import random
import uuid
import zlib
from typing import Any

import msgspec

from fairness.tenants import TenantsConfig
from loadtests.tasks import AgentTask
from loadtests.workloads.catalog import (
    DES_ONLY_WORKLOADS,
    WORKLOADS,
    TenantStream,
    check_slo_classes,
    generate,
    parse_tenant_streams,
)
from proxy.arg_types import positive

HTTP_WORKLOADS = tuple(w for w in WORKLOADS if w not in DES_ONLY_WORKLOADS)

AUTO = "auto"  # each user class runs its own workload (SweAgent: swe, WebArenaAgent: webarena)
SHAPES = ("none", "ramp", "step", "burst")
TENANT_MIXES: dict[str, str] = {
    "single": "default:1",
    "two-tenants": "team-a:3,team-b:1",
    "tiers": "gold:1:interactive,silver:2:standard,bronze:4:batch",
    "swe-vs-webarena": "coders:1:standard:swe,browsers:1:interactive:webarena",
}
_PROCESS = uuid.uuid4().hex[:6]  # distinct session ids across Locust workers


class LocustOptions(msgspec.Struct, frozen=True, kw_only=True):
    workload: str = AUTO
    tenant_mix: str = "single"
    time_scale: float = 1.0
    model: str = "saga-sim"
    shape: str = "none"
    no_stream: bool = False
    request_timeout: float = 600.0
    agent_seed: int = 0
    no_session_end: bool = False

    def problem(self) -> str | None:
        """What is wrong with these values, if anything: the checks the command line makes, for values that
        came another way (the web UI's "Custom parameters" reach the options with Locust's own conversion
        alone: `float("0")` passes, and every user of such a run failed or the run reported nothing)."""
        for name, value in (("--time-scale", self.time_scale), ("--request-timeout", self.request_timeout)):
            if not math.isfinite(value) or value <= 0:
                return f"{name} needs a finite number above 0, not {value!r}"
        if self.workload not in (AUTO, *HTTP_WORKLOADS):
            return f"--workload {self.workload!r} is not one of {', '.join((AUTO, *HTTP_WORKLOADS))}"
        try:
            parse_tenant_mix(self.tenant_mix)
        except ValueError as e:
            return f"--tenant-mix: {e}"
        return None

    @classmethod
    def of(cls, environment: Any) -> LocustOptions:
        parsed = getattr(environment, "parsed_options", None)
        defaults = cls()
        if parsed is None:
            return defaults
        fields = {f: getattr(parsed, f, getattr(defaults, f)) for f in cls.__struct_fields__}
        return cls(**fields)


# When the run time (-t) ends, users still in an agent task may finish it for this long (Locust's own
# --stop-timeout, whose default of 0 would cut every task off and report none): agent tasks take minutes.
DEFAULT_STOP_TIMEOUT_S = 120


def add_options(parser: Any) -> None:
    parser.set_defaults(stop_timeout=DEFAULT_STOP_TIMEOUT_S)
    # On Locust's parser itself, not an argument group: only its add_argument marks options for the web UI.
    parser.add_argument(
        "--workload",
        default=AUTO,
        choices=(AUTO, *HTTP_WORKLOADS),
        help="workload every user runs; 'auto': each user class its own (SweAgent: swe, WebArenaAgent: "
        "webarena)",
    )
    parser.add_argument(
        "--tenant-mix",
        default="single",
        help=f"tenant mix: a preset ({', '.join(TENANT_MIXES)}) or tenant:weight[:slo_class[:workload]],...",
    )
    parser.add_argument(
        "--time-scale",
        type=positive,
        default=1.0,
        help="speed-up of simulated replicas (their --time-scale): tool waits are divided by it and reported "
        "times multiplied by it; 1 against real vLLM",
    )
    parser.add_argument("--model", default="saga-sim", help="model name sent in every request")
    parser.add_argument(
        "--shape",
        default="none",
        choices=SHAPES,
        help="load shape over -u/-r/-t (loadtests/locust_shapes.py)",
        include_in_web_ui=False,  # read once at start
    )
    parser.add_argument("--no-stream", action="store_true", help="whole answers instead of SSE streaming")
    parser.add_argument(
        "--request-timeout",
        type=positive,
        default=600.0,
        help="the longest one LLM call may take, its whole answer (streamed too) read, in workload seconds "
        "(wall x --time-scale); past it the call fails as a timeout",
    )
    parser.add_argument("--agent-seed", type=int, default=0, help="seed of the generated agent tasks")
    parser.add_argument(
        "--no-session-end",
        action="store_true",
        help="leave each session to the router's idle timeout instead of ending it with the task "
        "(X-Session-End: true on its last call; a failed or stopped task's by SAGA's session API)",
    )


def parse_tenant_mix(text: str) -> list[TenantStream]:
    if text not in TENANT_MIXES and ":" not in text and "," not in text:
        close = difflib.get_close_matches(text, TENANT_MIXES, n=1, cutoff=0.8)
        if close:  # `two-tenant` ran one tenant of that name (the forty-fourth session's review)
            raise ValueError(
                f"tenant mix {text!r} is no preset: did you mean {close[0]!r}? (one tenant alone: {text}:1)"
            )
    streams = parse_tenant_streams(
        TENANT_MIXES.get(text, text), default_workload=AUTO, workloads=(AUTO, *HTTP_WORKLOADS)
    )
    if not streams:
        raise ValueError(f"empty tenant mix {text!r}")
    check_slo_classes(streams, TenantsConfig().slo_classes)  # (an unknown one was taken without a word)
    return streams


class TaskSource:
    """One user's endless stream of tasks of `workload` (a catalog name) across the tenant mix."""

    def __init__(self, workload: str, tenants: list[TenantStream], *, seed: int, user_key: str) -> None:
        self.tenants = [
            msgspec.structs.replace(t, workload=workload) if t.workload == AUTO else t for t in tenants
        ]
        self.rng = random.Random(zlib.crc32(f"{seed}/{user_key}".encode()))
        self.prefix = f"{_PROCESS}-{user_key}"
        self.count = 0

    def next(self) -> AgentTask:
        self.count += 1
        (task,) = generate(self.tenants[0].workload, 1, seed=self.rng.randrange(2**31), tenants=self.tenants)
        return msgspec.structs.replace(task, session_id=f"{self.prefix}-{self.count}-{task.session_id}")
