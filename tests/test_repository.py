"""The repository holds sources, not what the build makes: the paths `make test` creates (the vLLM venv, the
tiny model, the compiled extensions) are never tracked, not even as a symlink to a shared copy (one such
commit once replaced a checkout's 3.4 GB vLLM venv with a link to itself)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILT = (".venv-vllm", ".cache", "build", "saga_native/compiled.json")


def _tracked() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p]


def test_nothing_the_build_makes_is_tracked() -> None:
    tracked = _tracked()
    assert not [p for p in tracked if p in BUILT or p.startswith(tuple(b + "/" for b in BUILT))]
    assert not [p for p in tracked if p.endswith(".so")]


def test_the_build_directories_are_ignored_as_links_too() -> None:
    """A worktree links `.venv-vllm` and `.cache` to the main checkout's: git must ignore the links."""
    _tracked()
    for name in (".venv-vllm", ".cache"):
        check = subprocess.run(["git", "check-ignore", "-q", "--no-index", name], cwd=ROOT)
        assert check.returncode == 0, f"{name} is not ignored"
