"""The replica set changes made through the admin API, kept for workers that start later.

With `saga serve --workers N`, an admin change (`POST /saga/v1/replicas`, `/drain`, `/remove`) is applied by
every worker running at the time (proxy/worker_gather.py broadcasts it). A worker the supervisor restarts
later builds its replicas from the configuration, so without a record it would route to a removed replica,
ignore an added one and serve from a draining one.

Contract:
- `ReplicaChanges(directory)` keeps the changes in `replica-changes.json` in the worker directory (made
  private by the supervisor, fresh per `saga serve`). The file holds the resulting state, not a log: the
  replicas added, the ones draining and the ones removed, each a sorted list of URLs, so it never grows past
  the URLs an operator named.
- `record(kind, url)` (kind: added, undrained, draining, removed) folds one change in: adding undoes a
  removal and a drain, undraining (the admin API's add of a replica already in the set) a drain only,
  removing undoes an addition and a drain. Every worker that applies a change records it: the fold
  is idempotent, and one client's changes reach the file in the order it made them (an admin answer comes
  once every worker applied it). A read-modify-write holds an exclusive `flock` on `replica-changes.lock`,
  and the file is replaced whole (written aside, then renamed), so a reader never sees half of it.
- `load()` is the state a starting worker applies on top of its configured replicas (proxy/admin.py
  `replay_replica_changes`). A missing file is no change; an unreadable or malformed one is reported by
  `ReplicaChangesError` (the worker logs it and starts from its configuration rather than not at all).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from typing import Literal

import msgspec

FILE = "replica-changes.json"
LOCK = "replica-changes.lock"

ChangeKind = Literal["added", "undrained", "draining", "removed"]


class ReplicaChangesError(Exception):
    """The record could not be read or written; the message says which file and why."""


class ReplicaSetChanges(msgspec.Struct, forbid_unknown_fields=True):
    added: list[str] = []
    draining: list[str] = []
    removed: list[str] = []

    def fold(self, kind: ChangeKind, url: str) -> ReplicaSetChanges:
        added, draining, removed = set(self.added), set(self.draining), set(self.removed)
        if kind == "added":
            added.add(url)
            draining.discard(url)
            removed.discard(url)
        elif kind == "undrained":  # (a replica in the set: the configuration's, discovery's or one added)
            draining.discard(url)
        elif kind == "draining":
            draining.add(url)
        else:
            removed.add(url)
            added.discard(url)
            draining.discard(url)
        return ReplicaSetChanges(sorted(added), sorted(draining), sorted(removed))


class ReplicaChanges:
    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, FILE)
        self._lock_path = os.path.join(directory, LOCK)

    def load(self) -> ReplicaSetChanges:
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return ReplicaSetChanges()
        except OSError as e:
            raise ReplicaChangesError(f"cannot read {self.path}: {e}") from e
        try:
            return msgspec.json.decode(raw, type=ReplicaSetChanges)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise ReplicaChangesError(f"{self.path} is not a replica change record: {e}") from e

    def record(self, kind: ChangeKind, url: str) -> None:
        try:
            with self._locked():
                try:
                    changes = self.load()
                except ReplicaChangesError:  # a damaged record is replaced by what is known now
                    changes = ReplicaSetChanges()
                aside = f"{self.path}.{os.getpid()}"
                with open(aside, "wb") as f:
                    f.write(msgspec.json.encode(changes.fold(kind, url)))
                os.replace(aside, self.path)
        except OSError as e:
            raise ReplicaChangesError(f"cannot record a replica change in {self.path}: {e}") from e

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock
