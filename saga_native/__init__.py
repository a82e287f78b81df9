"""The compiled modules' guard: never run a compiled module whose source has changed since the build.

setup.py compiles the hot modules with mypyc into C extensions beside their sources (`pip install -e .`
builds them in place) and writes `saga_native/compiled.json`: each compiled module's name and the SHA-256
of its source at build time. Python prefers an extension to a `.py` of the same name, so an edit to a compiled
module's source would otherwise be silently ignored. Every SAGA package imports this module first (its
`__init__`), which puts `CompiledGuard` in front of the import system:

- a module of a SAGA package that would load from an extension beside its `.py` loads only if every source
  in the manifest still has its recorded hash; otherwise the import fails with `StaleBuildError`, naming
  the changed sources and how to rebuild (`make install`);
- with `SAGA_PURE_PYTHON=1` in the environment, such modules load from their `.py` instead (the build's
  extensions are ignored): the pure-Python reference, no rebuild needed.

Modules without an extension are untouched. docs/development.md has the workflow."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ExtensionFileLoader, ModuleSpec, PathFinder
from importlib.util import spec_from_file_location
from pathlib import Path
from types import ModuleType
from typing import Any

PURE_ENV = "SAGA_PURE_PYTHON"
PACKAGES = frozenset({"fairness", "loadtests", "predictor", "proxy", "simulator"})
ROOT = Path(__file__).resolve().parent.parent
MANIFEST = Path(__file__).resolve().parent / "compiled.json"
REBUILD = (
    "Rebuild the compiled modules with `make install` (pip install -e '.[test]'), or run pure Python "
    f"with {PURE_ENV}=1."
)


class StaleBuildError(ImportError):
    """A compiled module's extension no longer matches the sources it was built from."""


def pure_python() -> bool:
    return os.environ.get(PURE_ENV, "") not in ("", "0")


def stale_sources(manifest: Path = MANIFEST, root: Path = ROOT) -> list[str]:
    """The manifest's modules whose source differs from (or is missing since) the build, as paths; every
    module when the manifest is missing or unreadable ("<manifest>" then)."""
    try:
        recorded = json.loads(manifest.read_text())["modules"]
    except (OSError, ValueError, KeyError, TypeError):
        return [f"<{manifest} missing or unreadable>"]
    stale = []
    for module, digest in sorted(recorded.items()):
        source = root / (module.replace(".", "/") + ".py")
        try:
            current = hashlib.sha256(source.read_bytes()).hexdigest()
        except OSError:
            current = None
        if current != digest:
            stale.append(str(source.relative_to(root)))
    return stale


class CompiledGuard:
    """A meta path finder in front of the others (see the module docstring)."""

    def __init__(
        self,
        manifest: Path = MANIFEST,
        root: Path = ROOT,
        *,
        pure: bool = False,
        packages: frozenset[str] = PACKAGES,
    ) -> None:
        self.manifest = manifest
        self.root = root
        self.pure = pure
        self.packages = packages
        self._stale: list[str] | None = None  # checked once, at the first compiled import

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        top, _, rest = fullname.partition(".")
        if not rest or top not in self.packages:
            return None
        spec = PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None or not isinstance(spec.loader, ExtensionFileLoader):
            return None
        source = Path(spec.origin).with_name(fullname.rpartition(".")[2] + ".py")
        if not source.is_file():
            return None
        if self.pure:
            return spec_from_file_location(fullname, source)
        if self._stale is None:
            self._stale = stale_sources(self.manifest, self.root)
        if self._stale:
            raise StaleBuildError(
                f"{fullname} is compiled ({Path(spec.origin).name}) but its build is stale; changed since "
                f"the build: {', '.join(self._stale)}. {REBUILD}",
                name=fullname,
            )
        return spec


def compiled_modules() -> list[str]:
    """The SAGA modules loaded so far from compiled extensions (for benchmark reports)."""
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if name.partition(".")[0] in PACKAGES and (getattr(module, "__file__", None) or "").endswith(".so")
    )


def build_description(manifest: Path = MANIFEST) -> str:
    """How SAGA's hot modules run in this process and the ones it starts (for benchmark reports: per-call
    CPU differs ~2x between the two)."""
    if pure_python():
        return f"SAGA pure Python ({PURE_ENV}=1)"
    try:
        modules = json.loads(manifest.read_text())["modules"]
    except (OSError, ValueError, KeyError, TypeError):
        return "SAGA pure Python (not compiled)"
    return f"SAGA compiled (mypyc, {len(modules)} modules)"


def install() -> None:
    """Put the guard first on `sys.meta_path`, once; an uncaught `StaleBuildError` is said in one line."""
    if not any(isinstance(finder, CompiledGuard) for finder in sys.meta_path):
        sys.meta_path.insert(0, CompiledGuard(pure=pure_python()))
    if not isinstance(sys.excepthook, _OneLineForStaleBuilds):
        sys.excepthook = _OneLineForStaleBuilds(sys.excepthook)


class _OneLineForStaleBuilds:
    """`sys.excepthook` that writes an uncaught `StaleBuildError` as one `saga: error:` line (what `saga`
    prints for its other errors) instead of the import's traceback, 12 lines with the message last (the
    forty-fourth session's review); every other exception goes to the hook it wraps. The process still
    ends with status 1, as on any uncaught exception."""

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped

    def __call__(self, kind: type[BaseException], value: BaseException, traceback: Any) -> None:
        if isinstance(value, StaleBuildError):
            print(f"saga: error: {value}", file=sys.stderr)
            return
        self.wrapped(kind, value, traceback)


install()
