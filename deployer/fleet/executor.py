"""Where per-board operations run: a local thread pool, or a Dask cluster for very large fleets.

Both are a `concurrent.futures.Executor`, so the fleet code never knows which one it has. Dask's
`distributed.Client.get_executor()` is the door to an existing cluster (`--executor
dask://HOST:PORT`): workers run deployer.fleet.ops functions with their own SSH connections, so a
controller's connection and CPU limits stop being the fleet's. Dask workers must be able to read
the release folder (run them on the controller host or give them the same path on shared storage)
and reach the boards; live per-board events stay local (results come back when a board is done).
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

from deployer.errors import DeployerError


@dataclass
class ExecutorSpec:
    kind: str              # "local" | "dask"
    address: str | None = None

    @property
    def local(self) -> bool:
        return self.kind == "local"


def parse_executor(text: str | None) -> ExecutorSpec:
    if not text or text == "local":
        return ExecutorSpec("local")
    if text.startswith("dask://"):
        rest = text[len("dask://"):]
        host, _, port = rest.rpartition(":")
        if not host or not port.isdigit():
            raise DeployerError(f"--executor {text!r}: expected dask://HOST:PORT (the scheduler's address)")
        return ExecutorSpec("dask", f"tcp://{host}:{port}")
    raise DeployerError(f"--executor {text!r}: use 'local' or dask://HOST:PORT")


_idle_pools: list[ThreadPoolExecutor] = []
_idle_lock = threading.Lock()


def _local_pool(n: int) -> ThreadPoolExecutor:
    """A thread pool with `n` threads already started.

    ThreadPoolExecutor starts a thread per submit, and each start waits for the new thread to get
    the GIL: with a hundred boards already talking, that alone took ~8 ms per board (1.7 s of a
    200-board no-op rollout). Starting them all before any board is busy costs ~20 ms. Inside the
    persistent fleet controller (deployer.fleet.controller) pools are kept for the next command."""
    with _idle_lock:
        for pool in _idle_pools:
            if pool._max_workers >= n:          # noqa: SLF001 - the pool's size, read only
                _idle_pools.remove(pool)
                return pool
    pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="fleet")
    gate = threading.Barrier(n + 1)
    for _ in range(n):
        pool.submit(gate.wait)
    gate.wait()
    return pool


def _done_with(pool: ThreadPoolExecutor) -> None:
    from deployer.ssh import pool as conn_pool

    if conn_pool.active() is not None:        # the controller: keep the threads for the next command
        with _idle_lock:
            _idle_pools.append(pool)
        return
    pool.shutdown(wait=True)


@contextlib.contextmanager
def open_executor(spec: ExecutorSpec, max_parallel: int) -> Iterator[Executor]:
    """An Executor running at most `max_parallel` board operations at once (locally)."""
    if max_parallel < 1:
        raise DeployerError("--max-parallel must be at least 1")
    if spec.local:
        pool = _local_pool(max_parallel)
        try:
            yield pool
        except BaseException:   # Ctrl-C: start no further board; running ones end at their deadline
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        _done_with(pool)
        return
    try:
        from distributed import Client
    except ImportError:
        raise DeployerError("--executor dask://...: the `distributed` package is not installed",
                            hint="pip install distributed (scripts/setup.sh installs it)") from None
    try:
        client = Client(spec.address, timeout="10s", set_as_default=False)
    except (OSError, TimeoutError) as err:
        raise DeployerError(f"--executor dask://{spec.address[6:]}: cannot reach the Dask scheduler ({err})") from None
    try:
        yield client.get_executor(pure=False)
    finally:
        client.close()
