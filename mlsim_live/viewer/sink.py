"""`ViewerSink`: hands reconstructions from the worker thread to the viewer, newest only."""

from __future__ import annotations

import threading
import time
from collections import deque

from pyqtgraph.Qt import QtCore

from mlsim_live.live.newest import Newest
from mlsim_live.live.results import GroupResult

# Window over which the SR frame rate is measured.
_RATE_WINDOW_S = 10.0
_RATE_SAMPLES = 64


class ViewerSink(QtCore.QObject):
    """A pipeline sink that feeds a `SIMViewer` across threads, coalesced to the newest result.

    ``on_result`` may be called from any thread. It stores the result, replacing any result the
    viewer has not taken yet, and emits ``result_ready`` only when no notification is pending,
    so the GUI event queue never holds more than one. It never touches a widget and returns at
    once: a slow display never slows the reconstruction.

    Create it in the GUI thread; connect ``result_ready`` and ``finished`` with a queued
    connection (`SIMViewer` does) and call `take` in the GUI thread.

    Signals
    -------
    result_ready()
        A new result is waiting; call `take`.
    finished()
        The pipeline called `close`: no more results will come.
    """

    result_ready = QtCore.Signal()
    finished = QtCore.Signal()

    def __init__(self, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self._lock = threading.Lock()
        self._newest: Newest[GroupResult] = Newest()
        self._arrivals: deque[float] = deque(maxlen=_RATE_SAMPLES)

    # -- worker side -------------------------------------------------------------------------
    def on_result(self, result: GroupResult) -> None:
        """Store ``result`` as the newest and notify the viewer (thread-safe, non-blocking)."""
        with self._lock:
            self._arrivals.append(time.monotonic())
        if self._newest.put(result):
            self.result_ready.emit()

    def close(self) -> None:
        """Tell the viewer that the pipeline has finished (thread-safe, idempotent)."""
        if self._newest.close():
            self.finished.emit()

    # -- GUI side ----------------------------------------------------------------------------
    def take(self) -> GroupResult | None:
        """Return the newest result not taken yet, or None; clear the pending notification."""
        return self._newest.take()

    def sr_fps(self, now: float | None = None) -> float | None:
        """Rate at which reconstructions arrived over the last 10 s, or None with fewer than 2."""
        now = time.monotonic() if now is None else now
        with self._lock:
            recent = [t for t in self._arrivals if now - t <= _RATE_WINDOW_S]
        if len(recent) < 2 or recent[-1] <= recent[0]:
            return None
        return (len(recent) - 1) / (recent[-1] - recent[0])

    @property
    def closed(self) -> bool:
        """True once the pipeline has called `close`."""
        return self._newest.closed

    @property
    def n_received(self) -> int:
        """Number of results handed to `on_result`."""
        return self._newest.counts()[0]

    @property
    def n_coalesced(self) -> int:
        """Results replaced by a newer one before the viewer took them (never displayed)."""
        return self._newest.counts()[2]
