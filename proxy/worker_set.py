"""Which worker process this is, when `saga serve --workers N` runs the proxy as N processes on one port.

One event-loop thread is what bounds a single proxy's throughput (docs/results/overhead.md), so the proxy can
run as N worker processes sharing its port (SO_REUSEPORT). A session must still be scheduled by one process
(its binding, KV reservation, retention and learned graph live in one scheduler core), so every session has
an owner: `owner_of(session_key)`, a stable hash of the session's key modulo the number of workers; a chat
conversation naming no session is owned by the worker that served its first call, which the workers' shared
table names (proxy/response_owners.py `ChainOwners`; proxy/fast_server.py). A worker that reads a call whose
session another worker owns hands the client connection to that owner.

Contract: `WorkerSet.from_environ()` is None in a single-process proxy (the default); in a worker it names the
worker's index, the number of workers and the private directory (mode 0700, made by the supervisor) that holds
each worker's sockets: `app_socket(i)` (worker i's aiohttp app: the routes the fast server does not serve, and
what other workers ask when they gather metrics and state) and `handoff_socket(i)` (where worker i receives
client connections handed over to it). The supervisor sets the three `SAGA_WORKER_*` variables; they are not
user configuration.
"""

from __future__ import annotations

import hashlib
import os
import secrets

import msgspec

INDEX_VAR, COUNT_VAR, DIRECTORY_VAR = "SAGA_WORKER_INDEX", "SAGA_WORKER_COUNT", "SAGA_WORKER_DIR"
TENANT_KEY_FILE = "tenant.key"  # the secret that keys tenants named by API key (proxy/identity.py)


def write_private(path: str, data: bytes) -> None:
    """A new file in the worker directory that its owner alone can read (it may hold secrets)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def write_tenant_key(directory: str) -> None:
    """A random secret for the workers' tenant names (`identity.TENANT_KEY`): one for every worker, so that
    one API key names one tenant on each."""
    write_private(os.path.join(directory, TENANT_KEY_FILE), secrets.token_bytes(32))


LOCAL_HEADER = "X-Saga-Worker-Local"  # on a request between workers: answer for this worker alone


class WorkerSet(msgspec.Struct, frozen=True):
    index: int
    count: int
    directory: str

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> WorkerSet | None:
        env = os.environ if environ is None else environ
        if INDEX_VAR not in env:
            return None
        try:
            index, count = int(env[INDEX_VAR]), int(env[COUNT_VAR])
            directory = env[DIRECTORY_VAR]
        except (KeyError, ValueError) as err:
            raise ValueError(f"incomplete or malformed {INDEX_VAR}/{COUNT_VAR}/{DIRECTORY_VAR}") from err
        if not (count >= 1 and 0 <= index < count) or not directory:
            raise ValueError(f"worker index {index} out of range for {count} workers")
        return cls(index, count, directory)

    def app_socket(self, index: int) -> str:
        return os.path.join(self.directory, f"app-{index}.sock")

    def tenant_key(self) -> bytes | None:
        """The secret the supervisor wrote for its workers' tenant names (`write_tenant_key`), or None."""
        try:
            with open(os.path.join(self.directory, TENANT_KEY_FILE), "rb") as f:
                return f.read() or None
        except FileNotFoundError:
            return None

    def handoff_socket(self, index: int) -> str:
        return os.path.join(self.directory, f"handoff-{index}.sock")

    def others(self) -> list[int]:
        return [i for i in range(self.count) if i != self.index]

    def owner_of(self, session_key: str) -> int:
        return owner_of(session_key, self.count)

    def owns(self, session_key: str) -> bool:
        return self.count == 1 or owner_of(session_key, self.count) == self.index


def owner_of(session_key: str, workers: int) -> int:
    """The worker that schedules this session: stable across processes and restarts (not Python's `hash`)."""
    if workers == 1:
        return 0
    digest = hashlib.blake2b(session_key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % workers
