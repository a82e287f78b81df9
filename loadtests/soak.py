"""Soak: agent load with injected faults through one SAGA proxy for a long time, its memory sampled every
minute; memory must stay flat. A script, not a test (30 minutes by default):

    python -m loadtests.soak --minutes 30 --json docs/results/soak.json

Each round runs a fresh set of agent tasks (new session ids, so the session table is exercised) while the
default fault schedule plays on the replicas; rounds repeat until the time is up. The report lists the proxy's
RSS per minute (with `--workers N`, summed over the supervisor and its workers), the outcome counts of every
round, and the growth of RSS from the first sampled minute to the last. `--policy` and `--workers` set the
proxy as `saga serve` would run it (the default policy here stays `session-affinity`, as in the first soaks).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import platform
import shutil
import sys
import time
from pathlib import Path

import msgspec

from loadtests.bench.faults import FaultBenchConfig, FaultRig, default_schedule, tally
from loadtests.tasks import TaskRecord
from loadtests.workloads.catalog import generate


class SoakReport(msgspec.Struct, kw_only=True):
    command: str
    date: str
    machine: str
    minutes: float
    policy: str
    workers: int
    rounds: int
    rss_mb_per_minute: list[float]
    rss_growth_mb: float
    proxy_peak_rss_mb: float
    totals: dict[str, int]


async def soak(
    minutes: float, config: FaultBenchConfig, tasks_per_round: int, keep_log: Path | None = None
) -> SoakReport:
    samples: list[float] = []
    totals: dict[str, int] = {}
    rounds = 0
    end = time.monotonic() + minutes * 60
    async with FaultRig(config) as rig:

        async def sample() -> None:
            while True:
                samples.append(round(rig.rss_mb(), 1))
                print(f"minute {len(samples) - 1}: proxy RSS {samples[-1]} MB", flush=True)
                await asyncio.sleep(60)

        sampler = asyncio.create_task(sample())
        try:
            while time.monotonic() < end:
                tasks = generate(config.workload, tasks_per_round, seed=config.seed + rounds)
                tasks = [msgspec.structs.replace(t, session_id=f"r{rounds}-{t.session_id}") for t in tasks]
                records, _, _ = await rig.round(tasks, default_schedule(config.replicas))
                for key, value in tally(records).items():
                    totals[key] = totals.get(key, 0) + value
                rounds += 1
                print(f"round {rounds}: {tally(records)}", flush=True)
                for line in unanswered(records, config.time_scale):
                    print(f"  {line}", flush=True)
        finally:
            sampler.cancel()
        samples.append(round(rig.rss_mb(), 1))
        peak = rig.rss_mb("VmHWM")
        if keep_log is not None:
            shutil.copyfile(rig.proxy_log, keep_log)
    return SoakReport(
        command=" ".join(["python -m loadtests.soak", *sys.argv[1:]]),
        date=datetime.date.today().isoformat(),
        machine=f"{platform.machine()}, {platform.system()}, Python {platform.python_version()}",
        minutes=minutes,
        policy=config.policy,
        workers=config.workers,
        rounds=rounds,
        rss_mb_per_minute=samples,
        rss_growth_mb=round(samples[-1] - samples[min(1, len(samples) - 1)], 1),
        proxy_peak_rss_mb=round(peak, 1),
        totals=totals,
    )


def unanswered(records: list[TaskRecord], time_scale: float) -> list[str]:
    """A line for each call that got no answer (lost, hung, unreadable): its session, step, wall-clock start
    (to find it in the proxy's log), wall seconds taken, the replica that answered it and the error."""
    offset = time.time() - time.monotonic()
    lines = []
    for record in records:
        for call in record.calls:
            if call.error_kind in ("disconnected", "timeout", "bad_answer"):
                start = datetime.datetime.fromtimestamp(call.started_s / time_scale + offset)
                lines.append(
                    f"{call.error_kind}: session {record.session_id} step {call.step} at "
                    f"{start:%H:%M:%S.%f} after {call.latency_s / time_scale:.1f} s, replica "
                    f"{call.replica or '-'}: {call.error}"
                )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--tasks-per-round", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument("--policy", default=FaultBenchConfig().policy, help="the proxy's routing policy")
    parser.add_argument("--workers", type=int, default=1, help="the proxy's worker processes")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--proxy-log", type=Path, help="keep a copy of the proxy's log here")
    args = parser.parse_args()
    config = FaultBenchConfig(
        replicas=args.replicas,
        concurrency=args.concurrency,
        policy=args.policy,
        workers=args.workers,
        max_run_s=600.0,
    )
    report = asyncio.run(soak(args.minutes, config, args.tasks_per_round, args.proxy_log))
    print(msgspec.json.format(msgspec.json.encode(report), indent=2).decode())
    if args.json:
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode(report), indent=2))
    return 1 if report.totals.get("lost", 0) or report.totals.get("hung", 0) else 0


if __name__ == "__main__":
    sys.exit(main())
