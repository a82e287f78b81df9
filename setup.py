"""Build: setuptools (pyproject.toml) plus mypyc. The hot modules listed in COMPILED are compiled to C
extensions beside their sources; a manifest of the sources' hashes (saga_native/compiled.json) lets the
packages refuse a compiled module whose source has changed since (saga_native/__init__.py).

SAGA_NO_COMPILE=1 at install time builds nothing (pure Python; docs/development.md)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, ExecError, LinkError, PlatformError

ROOT = Path(__file__).resolve().parent

# Chosen from profiles of `saga bench des` and `saga bench core` (docs/results/des-speed.md, pass 6).
COMPILED = [
    "simulator/block_hash.py",
    "simulator/block_pool.py",
    "simulator/decode_run.py",
    "simulator/engine.py",
    "simulator/engine_offload.py",
    "simulator/request_queue.py",
    "simulator/request_state.py",
    "simulator/sentence_ids.py",
    "loadtests/des/client.py",
    "loadtests/des/cluster.py",
    "loadtests/des/event_queue.py",
    "loadtests/des/replica.py",
    "proxy/scheduler/admission.py",
    "proxy/scheduler/core.py",
    "proxy/scheduler/prefix_index.py",
    "proxy/scheduler/scoring.py",
    "proxy/scheduler/stealing.py",
    "proxy/scheduler/ttl_answers.py",
    "fairness/queue.py",
    "fairness/stats.py",
    "predictor/absorbing_chain.py",
    "predictor/graph.py",
    "predictor/predictor.py",
    "predictor/return_model.py",
    "predictor/session_scale.py",
    "predictor/sharded.py",
    "predictor/sketch.py",
    # The proxy's data path (docs/results/overhead.md, h-fast6; measured with loadtests/bench/call_cost.py).
    "proxy/call.py",
    "proxy/call_attempts.py",
    "proxy/calls.py",
    "proxy/directives.py",
    "proxy/fast_server.py",
    "proxy/http_limits.py",
    "proxy/forward.py",
    "proxy/identity.py",
    "proxy/inline_relay.py",
    "proxy/prompt_shape.py",
    "proxy/session_chain.py",
    "proxy/sse_scan.py",
    "proxy/upstream_pool.py",
    # The scheduler's plugins and their framework (their msgspec params: proxy/scheduler/plugin_params.py)
    "proxy/scheduler/framework.py",
    "proxy/scheduler/plugins/cache_aware.py",
    "proxy/scheduler/plugins/engine_waiting_gate.py",
    "proxy/scheduler/plugins/fixed_ttl.py",
    "proxy/scheduler/plugins/kv_headroom.py",
    "proxy/scheduler/plugins/kv_utilization.py",
    "proxy/scheduler/plugins/least_request.py",
    "proxy/scheduler/plugins/max_in_flight_gate.py",
    "proxy/scheduler/plugins/max_score.py",
    "proxy/scheduler/plugins/power_of_two.py",
    "proxy/scheduler/plugins/predicted_ttl.py",
    "proxy/scheduler/plugins/prefix_cache.py",
    "proxy/scheduler/plugins/queue_depth.py",
    "proxy/scheduler/plugins/round_robin.py",
    "proxy/scheduler/plugins/session_affinity.py",
    # Called on every call from the compiled path above (loadtests/bench/call_cost.py)
    "proxy/scheduler/prefill_rate.py",
    "proxy/metrics.py",
    "proxy/context.py",
    "proxy/model_routing.py",
    "proxy/priority_fallback.py",
]

MANIFEST = "saga_native/compiled.json"


def _module_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def manifest() -> dict[str, object]:
    return {
        "modules": {
            _module_name(path): hashlib.sha256((ROOT / path).read_bytes()).hexdigest() for path in COMPILED
        }
    }


class BuildExtWithManifest(build_ext):
    """Writes the manifest beside the extensions: in the source tree for an in-place (editable) build, in the
    build directory for a wheel."""

    def run(self) -> None:
        try:
            super().run()
        except (CCompilerError, CompileError, ExecError, LinkError, PlatformError) as error:
            # No working C compiler here: install pure Python (every result is the same, only slower) rather
            # than fail the install; the guard has no extension to judge, and a manifest is not written.
            print(
                f"warning: the hot modules could not be compiled ({error}); installing them as pure Python. "
                "Install a C compiler (e.g. gcc) and reinstall for the compiled speed (docs/development.md).",
                file=sys.stderr,
            )
            return
        if not self.extensions:  # SAGA_NO_COMPILE=1: a manifest left by an earlier build still describes its
            return  # extensions (if any are left), so the guard keeps judging them by it
        targets = [Path(self.build_lib) / MANIFEST]
        if self.inplace or getattr(self, "editable_mode", False):
            targets.append(ROOT / MANIFEST)
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(SOURCES_AT_BUILD, indent=1, sort_keys=True) + "\n")


# Hashed before mypyc reads the sources: an edit during the build makes the build stale, never "fresh".
SOURCES_AT_BUILD = manifest()


def _extensions() -> list[object]:
    if os.environ.get("SAGA_NO_COMPILE") == "1":
        return []
    from mypyc.build import mypycify

    os.chdir(ROOT)  # mypyc resolves module names and pyproject.toml's [tool.mypy] from the project root
    return list(mypycify(COMPILED, opt_level="3", debug_level="0", group_name="saga_native_lib"))


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExtWithManifest})
