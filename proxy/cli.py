"""The `saga` command: `serve` (the proxy), `sim` (simulated vLLM replicas) and `demo` (both, plus agents)."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import socket
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from proxy.arg_types import at_least, listen_host, positive, whole_between, with_defaults_shown
from proxy.config import KvEventsConfig, ProxyConfig
from proxy.logs import announce
from proxy.scheduler import PRESETS, ConfigError
from proxy.serve_options import (
    add_config_flags,
    configured_host,
    layered_time_scale,
    proxy_config,
    unknown_variables,
)
from simulator.block_hash import HASH_FUNCTIONS
from simulator.cost_model import PROFILES
from simulator.kv_events import EndpointError

if TYPE_CHECKING:
    from simulator.server import ReplicaFleet

DEFAULT_PROFILE = "llama3-8b-h100"


def _run(main: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop

        return uvloop.run(main)
    except ImportError:  # uvloop has no Windows build
        return asyncio.run(main)


MAX_SIMULATED_BLOCKS = 10_000_000  # `--num-gpu-blocks-override`'s bound (below)


def _add_sim_options(p: argparse.ArgumentParser, serve: bool = False) -> None:
    p.add_argument(
        "--time-scale",
        type=positive,
        # serve: None when not given, so SAGA_TIME_SCALE or the file still apply (serve_options.proxy_config)
        default=None if serve else 1.0,
        help="simulated time runs K times faster (default: 1.0"
        + (
            "; env SAGA_TIME_SCALE); with --replica, say the speed of a `saga sim --time-scale K` fleet"
            if serve
            else ")"
        ),
    )
    p.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default=DEFAULT_PROFILE,
        help="cost-model profile of the simulated GPU (simulator/cost_model.py; default: %(default)s)",
    )
    p.add_argument(
        "--model", default="saga-sim", help="model name the simulated replicas serve (default: %(default)s)"
    )
    p.add_argument(
        "--prefix-caching-hash-algo",
        choices=sorted(HASH_FUNCTIONS),
        default="sha256",
        help="block hash, as vLLM's flag ('builtin' is faster but not vLLM's hashes; default: %(default)s)",
    )
    p.add_argument(
        "--num-gpu-blocks-override",
        # vLLM's null block and at least one for KV; at most what no GPU holds (the simulated pool keeps a
        # few words a block: 10M blocks of 16 tokens is ~0.5 GB of the host's memory)
        type=whole_between(2, MAX_SIMULATED_BLOCKS),
        metavar="N",
        help="KV capacity in blocks (default: the profile's), as vLLM's flag",
    )
    p.add_argument(
        "--kv-offload-gib",
        type=positive,
        metavar="GIB",
        help="CPU KV offload pool per replica, as vLLM's --kv-offloading-backend native --kv-offloading-size",
    )
    p.add_argument(
        "--kv-events",
        metavar="ENDPOINT",
        help="publish vLLM KV-cache events over ZMQ: replica i on ENDPOINT's port + i (e.g. 'tcp://*:5557'; "
        "'tcp://127.0.0.1:*' for ephemeral loopback ports; a plain host:port is connected to, as in vLLM)",
    )


def _fleet_options(args: argparse.Namespace) -> dict[str, Any]:
    """The simulated replicas' options (`_add_sim_options`) as `start_fleet` keyword arguments."""
    return {
        "time_scale": 1.0 if args.time_scale is None else args.time_scale,
        "profile": args.profile,
        "model": args.model,
        "kv_events_endpoint": args.kv_events,
        "hash_algo": args.prefix_caching_hash_algo,
        "num_gpu_blocks": args.num_gpu_blocks_override,
        "kv_offload_gib": args.kv_offload_gib,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="saga", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the proxy in front of vLLM replicas")
    serve.add_argument("--replica", action="append", default=[], metavar="URL", help="a replica base URL")
    serve.add_argument(
        "--simulate", type=at_least(0), metavar="N", help="run N simulated replicas in-process (0: none)"
    )
    serve.add_argument("--config", type=Path, help="YAML file of ProxyConfig keys (docs/config.md)")
    add_config_flags(serve)
    _add_sim_options(serve, serve=True)

    sim = sub.add_parser("sim", help="run N simulated vLLM replicas over HTTP")
    sim.add_argument("--replicas", type=at_least(1), default=1, help="how many replicas to run")
    sim.add_argument(
        "--base-port", type=at_least(0), default=8100, help="the first replica's port, the next ones after"
    )
    sim.add_argument("--host", type=listen_host, default="127.0.0.1", help="the address they listen on")
    _add_sim_options(sim)

    demo = sub.add_parser("demo", help="compare routing policies on a small agent workload")
    demo.add_argument("--replicas", type=at_least(1), default=4, help="simulated replicas behind the proxy")
    demo.add_argument("--sessions", type=at_least(1), default=48, help="agent tasks, all started at once")
    demo.add_argument("--steps", type=at_least(1), default=12, help="LLM calls per task")
    demo.add_argument(
        "--time-scale", type=positive, default=4.0, help="simulated time runs K times faster than the wall's"
    )
    demo.add_argument(
        "--policies",
        default="round-robin,session-affinity,saga",
        help=f"comma-separated policies, each run on the same tasks; known: {', '.join(sorted(PRESETS))}",
    )
    demo.add_argument(
        "--kv-blocks",
        type=at_least(0),
        default=8000,
        help="KV blocks per replica (0: the profile's own, ~27k)",
    )
    demo.add_argument(
        "--profile", choices=sorted(PROFILES), default=DEFAULT_PROFILE, help="the replicas' model and GPU"
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of the agents' tasks")
    demo.add_argument("--stream", action="store_true", help="agents stream their answers")
    from loadtests.bench.cli import add_bench_parser

    add_bench_parser(sub)
    with_defaults_shown(parser)
    return parser


async def _serve(args: argparse.Namespace, argv: list[str]) -> int:
    from proxy.server import serve_forever
    from proxy.supervisor import supervise, worker_config
    from proxy.worker_set import WorkerSet

    workers = WorkerSet.from_environ()
    worker = workers is not None
    if workers is not None and (validated := worker_config(workers.directory)) is not None:
        await serve_forever(msgspec.structs.replace(validated, workers=1))  # the supervisor's, as it began
        return 0
    # the supervisor says it once for every worker, in the log format (a plain line in a JSON log before)
    warnings = [] if worker else unknown_variables(os.environ)
    try:
        if not args.simulate:
            config = _configured(args, args.replica, warnings)
            if config.workers > 1 and not worker:
                return await supervise(config, argv)
            await serve_forever(msgspec.structs.replace(config, workers=1) if worker else config)
            return 0
        from simulator.server import start_fleet

        # the replicas run at the configured speed (file < environment < --time-scale), and the core with them
        # (TTLs and learned gaps in their seconds): proxy_config below layers time_scale the same way
        scale = layered_time_scale(args)
        fleet = await start_fleet(args.simulate, **{**_fleet_options(args), "time_scale": scale})
        try:
            config = _configured(args, [*args.replica, *fleet.urls], warnings)
            announce(f"{args.simulate} simulated replicas: {', '.join(fleet.urls)}", config.log_format)
            config = _subscribed_to(config, fleet)
            if config.workers > 1 and not worker:  # the workers share these replicas (and their time)
                replicas = [flag for url in fleet.urls for flag in ("--replica", url)]
                environ = {**os.environ, "SAGA_TIME_SCALE": str(scale)}
                if config.kv_events is not None:  # the simulated replicas' endpoints, known only now
                    environ["SAGA_KV_EVENTS"] = msgspec.json.encode(config.kv_events).decode()
                return await supervise(config, [*argv, "--simulate", "0", *replicas], environ)
            await serve_forever(msgspec.structs.replace(config, workers=1) if worker else config)
            return 0
        finally:
            await fleet.close()
    except ConfigError:  # refused before they were said in the log format (a misspelt variable may be why)
        for warning in warnings:
            print(f"saga: warning: {warning}", file=sys.stderr)
        raise


def _configured(args: argparse.Namespace, replicas: list[str], warnings: list[str]) -> ProxyConfig:
    """`proxy_config`, with `warnings` (unknown `SAGA_*` variables) said in its log format."""
    config = proxy_config(args, replicas)
    for warning in warnings:
        announce(f"saga: warning: {warning}", config.log_format, warning=True)
    warnings.clear()  # said (`_serve` says what is left, as text, if the configuration is refused)
    return config


def _subscribed_to(config: ProxyConfig, fleet: ReplicaFleet) -> ProxyConfig:
    """With `--simulate N --kv-events ENDPOINT`: the proxy subscribes to the simulated replicas' KV events
    (those that bind their endpoint; one that connects to a subscriber is left to the user's)."""
    from simulator.kv_publisher import binds

    endpoints = {
        url: replica.kv_publisher.endpoint.replace("//0.0.0.0:", "//127.0.0.1:")
        for url, replica in zip(fleet.urls, fleet.replicas, strict=True)
        if replica.kv_publisher is not None and binds(replica.kv_events_endpoint or "")
    }
    if not endpoints:
        return config
    kv_events = config.kv_events or KvEventsConfig(port=None)
    merged = msgspec.structs.replace(kv_events, endpoints={**endpoints, **kv_events.endpoints})
    return msgspec.structs.replace(config, kv_events=merged)


def _demo(args: argparse.Namespace) -> int:
    """Runs the demo; 1 when any task failed (the table shows it, and why is printed under it)."""
    from loadtests.demo import DemoConfig, run_demo

    config = DemoConfig(
        replicas=args.replicas,
        sessions=args.sessions,
        steps=args.steps,
        time_scale=args.time_scale,
        policies=[p.strip() for p in args.policies.split(",") if p.strip()],
        profile=args.profile,
        seed=args.seed,
        stream=args.stream,
        kv_blocks=args.kv_blocks or None,
    )
    unknown = [p for p in config.policies if p not in PRESETS]
    if unknown or not config.policies:
        raise ConfigError(f"unknown policies {unknown}; known: {', '.join(sorted(PRESETS))}")
    if args.kv_blocks == 1:  # a replica needs two (simulator/block_pool.py): said here, not as a traceback
        raise ConfigError("--kv-blocks must be 0 (the profile's own) or at least 2")
    results = _run(run_demo(config))
    return 1 if any(run.summary.failed for run in results.values()) else 0


def _command(args: argparse.Namespace, argv: list[str]) -> int:
    if args.command == "serve":
        return _run(_serve(args, argv)) or 0
    if args.command == "sim":
        from simulator.server import serve_fleet_forever

        if args.base_port and args.base_port + args.replicas - 1 > 65535:
            raise ConfigError(
                f"--base-port {args.base_port} with {args.replicas} replicas runs past port 65535"
            )
        _run(
            serve_fleet_forever(
                args.replicas, host=args.host, base_port=args.base_port, **_fleet_options(args)
            )
        )
        return 0
    if args.command == "bench":
        from loadtests.bench.cli import run_bench

        return run_bench(args)
    return _demo(args)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    try:
        return _command(args, argv)
    except KeyboardInterrupt:
        # Ctrl-C: `serve` and `sim` stop as asked (0); a demo or bench cut short is no success (it said 0)
        if args.command in ("serve", "sim"):
            return 0
        print(f"saga {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ConfigError, EndpointError) as e:
        print(f"saga: error: {e}", file=sys.stderr)
        return 2
    except (socket.gaierror, UnicodeError) as e:  # a host to listen on that does not resolve, or cannot
        # (a DNS label over 63 characters fails IDNA encoding: `SAGA_HOST=xxx...` ended in a traceback)
        host = getattr(args, "host", None) or configured_host(args)  # the flag, else the file or environment
        where = f"host {host!r}" if host else "the configured host"
        why = e.strerror if isinstance(e, socket.gaierror) else f"not a host name ({e})"
        print(f"saga: error: cannot listen on {where}: {why}", file=sys.stderr)
        return 1
    except OSError as e:  # a port taken, or a host not on this machine: say so, without a traceback
        # (a negative errno is getaddrinfo's, as some servers re-raise it: a host that does not resolve)
        if e.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES) and not (e.errno or 0) < 0:
            raise
        print(f"saga: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
