"""The compiled modules' guard (saga_native): a compiled module whose source changed since the build is
refused with a message saying how to rebuild; `SAGA_PURE_PYTHON=1` loads the sources instead.

The unit tests use a throwaway package whose "extension" is a file with an extension module's name (the
guard decides from file names and hashes, before anything is loaded). The last two run the real build of
this checkout in a subprocess, when there is one (`make install`)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from importlib.machinery import EXTENSION_SUFFIXES, ExtensionFileLoader
from pathlib import Path

import pytest

import saga_native
from saga_native import CompiledGuard, StaleBuildError, stale_sources

ROOT = Path(__file__).resolve().parents[2]


def _package(tmp_path: Path) -> tuple[Path, Path]:
    """`guardpkg.mod` as a source and a fake extension beside it; the manifest records the source's hash."""
    pkg = tmp_path / "guardpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text("VALUE = 1\n")
    (pkg / f"mod{EXTENSION_SUFFIXES[0]}").write_bytes(b"not loaded by these tests")
    manifest = tmp_path / "compiled.json"
    digest = hashlib.sha256((pkg / "mod.py").read_bytes()).hexdigest()
    manifest.write_text(json.dumps({"modules": {"guardpkg.mod": digest}}))
    return pkg, manifest


def _guard(tmp_path: Path, manifest: Path, *, pure: bool = False) -> CompiledGuard:
    return CompiledGuard(manifest, tmp_path, pure=pure, packages=frozenset({"guardpkg"}))


def test_a_fresh_build_loads_the_extension(tmp_path: Path) -> None:
    pkg, manifest = _package(tmp_path)
    spec = _guard(tmp_path, manifest).find_spec("guardpkg.mod", [str(pkg)])
    assert spec is not None and isinstance(spec.loader, ExtensionFileLoader)
    assert stale_sources(manifest, tmp_path) == []


def test_an_edited_source_is_refused_naming_it_and_the_rebuild(tmp_path: Path) -> None:
    pkg, manifest = _package(tmp_path)
    (pkg / "mod.py").write_text("VALUE = 2\n")
    with pytest.raises(StaleBuildError) as refused:
        _guard(tmp_path, manifest).find_spec("guardpkg.mod", [str(pkg)])
    message = str(refused.value)
    assert "guardpkg/mod.py" in message and "make install" in message and "SAGA_PURE_PYTHON=1" in message
    assert isinstance(refused.value, ImportError)


def test_a_missing_manifest_or_module_entry_is_stale(tmp_path: Path) -> None:
    pkg, manifest = _package(tmp_path)
    assert stale_sources(tmp_path / "absent.json", tmp_path) != []
    with pytest.raises(StaleBuildError):
        _guard(tmp_path, tmp_path / "absent.json").find_spec("guardpkg.mod", [str(pkg)])
    (pkg / "mod.py").unlink()  # the source of a compiled module gone: stale too
    assert stale_sources(manifest, tmp_path) == ["guardpkg/mod.py"]


def test_pure_python_loads_the_source_even_when_stale(tmp_path: Path) -> None:
    pkg, manifest = _package(tmp_path)
    (pkg / "mod.py").write_text("VALUE = 3\n")
    spec = _guard(tmp_path, manifest, pure=True).find_spec("guardpkg.mod", [str(pkg)])
    assert spec is not None and spec.origin == str(pkg / "mod.py") and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.VALUE == 3


def test_modules_without_an_extension_and_other_packages_are_left_alone(tmp_path: Path) -> None:
    pkg, manifest = _package(tmp_path)
    (pkg / "plain.py").write_text("")
    guard = _guard(tmp_path, manifest)
    assert guard.find_spec("guardpkg.plain", [str(pkg)]) is None
    assert guard.find_spec("guardpkg", None) is None
    assert guard.find_spec("json.decoder", None) is None


def test_the_guard_is_installed_first_once() -> None:
    saga_native.install()
    guards = [f for f in sys.meta_path if isinstance(f, CompiledGuard)]
    assert len(guards) == 1 and sys.meta_path[0] is guards[0]


def _built() -> list[str]:
    return [name for name in ("simulator.engine", "proxy.scheduler.core") if _has_extension(name)]


def _has_extension(module: str) -> bool:
    base = ROOT / module.replace(".", "/")
    return any(base.with_name(base.name + suffix).is_file() for suffix in EXTENSION_SUFFIXES)


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )


@pytest.mark.skipif(not _built(), reason="no compiled build in this checkout (make install builds one)")
def test_the_real_build_is_refused_when_stale_and_bypassed_when_pure(tmp_path: Path) -> None:
    module = _built()[0]
    stale = tmp_path / "compiled.json"
    built = saga_native.MANIFEST
    recorded = json.loads(built.read_text()) if built.exists() else {"modules": {}}
    recorded["modules"][module] = "0" * 64  # as if its source had changed since the build
    stale.write_text(json.dumps(recorded))
    code = f"""
        import sys, saga_native
        guard = next(f for f in sys.meta_path if isinstance(f, saga_native.CompiledGuard))
        guard.manifest = saga_native.Path({str(stale)!r})
        try:
            import {module}
        except saga_native.StaleBuildError as e:
            print("REFUSED", e)
        else:
            print("LOADED", {module}.__file__)
    """
    refused = _run(code, SAGA_PURE_PYTHON="")
    assert refused.returncode == 0, refused.stderr
    assert refused.stdout.startswith("REFUSED") and "make install" in refused.stdout
    pure = _run(code, SAGA_PURE_PYTHON="1")
    assert pure.returncode == 0, pure.stderr
    assert pure.stdout.startswith("LOADED") and pure.stdout.strip().endswith(".py")


def test_an_uncaught_stale_build_error_is_one_line() -> None:
    """`saga` on a stale build died with the import's 12-line traceback, the message last (the forty-fourth
    session's review): now one `saga: error:` line, status 1 as for any uncaught exception; any other
    uncaught exception keeps its traceback."""
    stale = _run(
        """
        import saga_native
        raise saga_native.StaleBuildError("fairness.queue is compiled but its build is stale")
        """
    )
    assert stale.returncode == 1
    assert stale.stderr == "saga: error: fairness.queue is compiled but its build is stale\n", stale.stderr
    other = _run("import saga_native; raise ValueError('not a build problem')")
    assert other.returncode == 1 and "Traceback" in other.stderr and "ValueError" in other.stderr


def test_benchmark_reports_say_whether_saga_ran_compiled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A result could not say which build made it, though per-call CPU differs ~2x between them."""
    from loadtests.bench.report import machine_description

    manifest = tmp_path / "compiled.json"
    manifest.write_text(json.dumps({"modules": {"proxy.a": "x", "proxy.b": "y"}}))
    monkeypatch.delenv("SAGA_PURE_PYTHON", raising=False)
    assert saga_native.build_description(manifest) == "SAGA compiled (mypyc, 2 modules)"
    assert saga_native.build_description(tmp_path / "missing.json") == "SAGA pure Python (not compiled)"
    monkeypatch.setenv("SAGA_PURE_PYTHON", "1")
    assert saga_native.build_description(manifest) == "SAGA pure Python (SAGA_PURE_PYTHON=1)"
    assert machine_description().endswith("SAGA pure Python (SAGA_PURE_PYTHON=1)")
