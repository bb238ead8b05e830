"""Python's cycle collector runs in the GUI thread while the viewer is open.

The collector runs in whichever thread happens to allocate when its thresholds are crossed. In a
live run that is usually a pipeline thread (grouper, reconstruction worker, trust map, writer).
If the garbage it finds holds Qt objects (a window, a pyqtgraph item, a timer), their C++ side is
destroyed in that thread while the GUI thread may be painting them, which Qt does not allow and
which ends in a segmentation fault. pyqtgraph gives the same advice for threaded programs (its
``GarbageCollector``): switch automatic collection off and collect on a timer in the GUI thread.
`gui_thread_gc` does that for as long as the viewer's event loop runs, generation by generation
with Python's own thresholds, and restores the previous state afterwards.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

from pyqtgraph.Qt import QtCore

#: How often the GUI thread looks at the collector's counts.
DEFAULT_INTERVAL_MS = 500


def collect_due() -> int:
    """Collect the oldest generation whose count passed Python's threshold (with the younger
    ones), as automatic collection would; return the number of unreachable objects found."""
    counts = gc.get_count()
    thresholds = gc.get_threshold()
    for generation in (2, 1, 0):
        if thresholds[generation] and counts[generation] > thresholds[generation]:
            return gc.collect(generation)
    return 0


@contextmanager
def gui_thread_gc(interval_ms: int = DEFAULT_INTERVAL_MS) -> Iterator[None]:
    """Within the block, Python's cycle collector runs only in this (the GUI) thread.

    Automatic collection is switched off and a timer collects what is due every
    ``interval_ms``; leaving the block collects once more and restores automatic collection if
    it was on. Use around the viewer's event loop, in the main thread.
    """
    was_enabled = gc.isenabled()
    timer = QtCore.QTimer()
    timer.setInterval(max(10, int(interval_ms)))
    timer.timeout.connect(collect_due)
    gc.disable()
    timer.start()
    try:
        yield
    finally:
        timer.stop()
        timer.timeout.disconnect(collect_due)
        gc.collect()
        if was_enabled:
            gc.enable()
