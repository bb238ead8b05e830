"""The sink seam: where reconstructed groups go (viewer, TIFF writer, metrics, user code)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from mlsim_live.live.results import GroupResult


@runtime_checkable
class Sink(Protocol):
    """Receives each reconstructed group from the reconstruction worker.

    ``on_result`` is called from the worker thread, once per reconstruction, in order. It must
    return quickly (copy or enqueue, emit a Qt signal, append to a file): a slow sink delays the
    next reconstruction, never the acquisition. An exception it raises is logged in one line and
    counted, and the sink receives no more results (a full disk does not heal): the groups it
    misses are counted in the summary's ``sink_failures``; the other sinks go on.

    ``close`` is called once, from the thread that closes the pipeline, after the last
    ``on_result``.
    """

    def on_result(self, result: GroupResult) -> None:
        """Take one reconstructed group."""
        ...

    def close(self) -> None:
        """Finish: flush and release what the sink holds."""
        ...
