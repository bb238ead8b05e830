"""Where the groups of a batch are reconstructed: in this process, or over a Dask cluster."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from mlsim_live.batch.config import GroupOutput, GroupTask
from mlsim_live.errors import MLSimError

log = logging.getLogger(__name__)


class _Future(Protocol):
    def result(self) -> Any: ...

    def cancel(self) -> Any: ...


class Executor(Protocol):
    """Runs `run_group` somewhere and hands back a future."""

    #: how many groups may be in flight at once
    window: int

    def submit(self, fn: Callable[[GroupTask], GroupOutput], task: GroupTask) -> _Future: ...


class _Deferred:
    """A future that computes when its result is asked for (single-machine path)."""

    def __init__(self, fn: Callable[[GroupTask], GroupOutput], task: GroupTask) -> None:
        self._fn = fn
        self._task = task

    def result(self) -> GroupOutput:
        return self._fn(self._task)

    def cancel(self) -> None:
        return None


class LocalExecutor:
    """Reconstruct in this process, one group at a time, in order."""

    window = 1

    def submit(self, fn: Callable[[GroupTask], GroupOutput], task: GroupTask) -> _Deferred:
        return _Deferred(fn, task)


class DaskExecutor:
    """Spread groups over a Dask distributed cluster.

    Workers read the input files themselves, so they must see the same paths (a shared or the
    local file system).
    """

    def __init__(self, client: Any, window: int | None = None) -> None:
        self.client = client
        if window is None:
            n_threads = sum(client.nthreads().values()) or 1
            window = 2 * n_threads
        self.window = max(1, int(window))

    def submit(self, fn: Callable[[GroupTask], GroupOutput], task: GroupTask) -> Any:
        return self.client.submit(fn, task, pure=False)


@contextlib.contextmanager
def dask_executor(address: str, dashboard_address: str | None = None) -> Iterator[DaskExecutor]:
    """Connect to a scheduler at ``address`` or, for ``"local"``, start a 2-worker LocalCluster.

    The local cluster listens on 127.0.0.1 only, and serves no dashboard unless
    ``dashboard_address`` asks for one (e.g. ``"127.0.0.1:8787"``).
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise MLSimError(
            "--dask needs the 'distributed' package; expected `pip install mlsim-live[dask]`"
        ) from exc
    if not log.isEnabledFor(logging.DEBUG):  # Dask's INFO chatter would bury our own lines
        for name in ("distributed", "distributed.http.proxy"):
            logging.getLogger(name).setLevel(logging.WARNING)
    cluster = None
    try:
        if address == "local":
            cluster = LocalCluster(
                n_workers=2,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",  # scheduler and workers on loopback only
                dashboard_address=dashboard_address,
            )
            client = Client(cluster)
        else:
            try:
                client = Client(address)  # timeout: distributed.comm.timeouts.connect
            except (OSError, TimeoutError, ValueError) as exc:
                raise MLSimError(
                    f"cannot connect to a Dask scheduler at {address!r} ({exc}); expected "
                    "a running scheduler address such as tcp://host:8786, or 'local'"
                ) from exc
        try:
            log.info("Dask: %d workers at %s", len(client.nthreads()), client.scheduler.address)
            yield DaskExecutor(client)
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()
