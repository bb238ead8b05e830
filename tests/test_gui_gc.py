"""Qt objects are freed in the GUI thread: the collector runs there while the viewer is open,
and a closed window goes without the collector's help."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any Qt import

import gc
import threading
import weakref

import numpy as np
import pytest
from group_results import group_result

pytest.importorskip("pytestqt")


FREED_IN: list[str] = []  # the threads that freed each _Cycle


class _Cycle:
    """Garbage only the cycle collector can free; records the thread that freed it."""

    def __init__(self) -> None:
        self.me = self

    def __del__(self) -> None:
        FREED_IN.append(threading.current_thread().name)


def _make_cycles_in_a_thread(n: int) -> list[list[int]]:
    """Leave ``n`` cycles behind in another thread, and enough live allocations to make a
    collection due (automatic collection would have run in that thread)."""
    kept: list[list[int]] = []

    def work() -> None:
        for _ in range(n):
            _Cycle()
        kept.extend([i] for i in range(3 * gc.get_threshold()[0]))

    thread = threading.Thread(target=work, name="pipeline-like")
    thread.start()
    thread.join()
    return kept


@pytest.fixture
def gc_state():
    """Restore the collector's state whatever a test does to it."""
    was = gc.isenabled()
    FREED_IN.clear()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def test_collect_due_collects_only_past_a_threshold(gc_state) -> None:
    from mlsim_live.viewer.gui_gc import collect_due

    gc.disable()
    gc.collect()
    _Cycle()
    assert collect_due() == 0 and not FREED_IN  # counts below the thresholds
    kept = [[] for _ in range(gc.get_threshold()[0] + 10)]  # generation 0 passes its threshold
    assert collect_due() >= 1 and kept
    assert FREED_IN == [threading.current_thread().name]


@pytest.mark.qt
def test_while_the_viewer_runs_cycles_of_other_threads_are_freed_in_the_gui_thread(
    qtbot, gc_state
) -> None:
    from mlsim_live.viewer.gui_gc import gui_thread_gc

    gc.enable()
    with gui_thread_gc(interval_ms=20):
        assert not gc.isenabled()
        kept = _make_cycles_in_a_thread(50)
        assert FREED_IN == []  # the worker thread freed none of them
        qtbot.waitUntil(lambda: len(FREED_IN) == 50, timeout=10000)
    assert set(FREED_IN) == {threading.main_thread().name} and kept
    assert gc.isenabled()  # restored


@pytest.mark.qt
def test_gui_thread_gc_keeps_the_collector_off_if_it_was_off(qtbot, gc_state) -> None:
    from mlsim_live.viewer.gui_gc import gui_thread_gc

    gc.disable()
    with gui_thread_gc(interval_ms=20):
        _Cycle()
    assert not gc.isenabled()
    assert FREED_IN == [threading.main_thread().name]  # the final collection


@pytest.mark.qt
def test_run_viewer_runs_its_loop_with_the_collector_in_the_gui_thread(qtbot, gc_state) -> None:
    from mlsim_live.viewer import open_viewer, run_viewer

    gc.enable()
    window, _ = open_viewer(size=(400, 300))
    qtbot.addWidget(window)
    seen: list[bool] = []

    def done() -> bool:
        seen.append(gc.isenabled())
        return len(seen) > 3

    assert run_viewer(window, done=done, close_when_done=True, timeout_s=30)
    assert seen and not any(seen)
    assert gc.isenabled()


@pytest.mark.qt
@pytest.mark.parametrize("with_trust", [False, True])
def test_a_closed_window_is_freed_without_the_cycle_collector(
    qtbot, gc_state, with_trust: bool
) -> None:
    """Nothing but Qt keeps a closed window: once Qt deleted it, dropping the last reference
    frees it in this thread. A cycle (the trust sink's callback used to make one) would leave
    it to whichever thread next runs the collector."""
    from pyqtgraph.Qt import QtWidgets
    from qt_cleanup import delete_deferred

    from mlsim_live.trust.sink import TrustSink
    from mlsim_live.viewer import SIMViewer, ViewerSink

    raw = np.random.default_rng(0).random((9, 32, 32), dtype=np.float32)
    result = group_result(raw, np.ones((64, 64), np.float32))
    trust = TrustSink(every=False)
    try:
        gc.collect()
        gc.disable()
        window = SIMViewer(ViewerSink(), status_interval_ms=50)
        window.show()
        window.show_result(result)
        if with_trust:
            window.attach_trust(trust)
            window.set_trust_overlay(True)
        QtWidgets.QApplication.processEvents()
        freed = weakref.ref(window)
        window.close()
        assert trust.on_map is None
        window.deleteLater()
        delete_deferred()
        del window
        assert freed() is None
    finally:
        trust.close()
