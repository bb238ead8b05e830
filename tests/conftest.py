"""Shared fixtures: fake reconstructors and a headless Micro-Manager core with the demo config."""

from __future__ import annotations

import errno
import gc
import io
import logging
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

# The standard LogRecord factory, taken before any plugin's session fixture replaces it.
_LOG_RECORD_FACTORY = logging.getLogRecordFactory()


@pytest.fixture(autouse=True, scope="session")
def standard_log_records():
    """Keep Python's own log records for the whole suite.

    napari's pytest plugin (installed with the ``napari`` extra, and loaded by pytest wherever
    napari is) swaps in a record factory that turns every log argument but int and float into a
    string, so a ``%d`` or ``%.1f`` of a numpy number fails to format. Session fixtures of
    plugins run first: this one restores the standard factory after napari's.
    """
    replaced = logging.getLogRecordFactory()
    logging.setLogRecordFactory(_LOG_RECORD_FACTORY)
    yield
    logging.setLogRecordFactory(replaced)


class FakeReconstructor:
    """2x nearest-neighbour upsampling of the group mean; optionally slow, gated or failing.

    ``gate``: every reconstruction waits until the event is set. ``fail``: a predicate on the
    call number (0, 1, ...) that makes that call raise. ``started``: set when a call begins.
    """

    name = "fake"
    provider = "numpy"
    scale = 2

    def __init__(
        self,
        delay_s: float = 0.0,
        gate: threading.Event | None = None,
        fail: Callable[[int], bool] | None = None,
    ) -> None:
        self.delay_s = delay_s
        self.gate = gate
        self.fail = fail
        self.started = threading.Event()
        self.calls = 0

    def reconstruct(self, group: np.ndarray) -> np.ndarray:
        call = self.calls
        self.calls += 1
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(30), "test gate never opened"
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail is not None and self.fail(call):
            raise RuntimeError(f"deliberate failure on call {call}")
        mean = group.mean(axis=0, dtype=np.float32)
        return np.repeat(np.repeat(mean, 2, axis=0), 2, axis=1)


@pytest.fixture(autouse=True)
def no_thread_of_ours_outlives_its_test():
    """Every ``mlsim-*`` thread a test started has ended when the test ends (after a grace of
    a few seconds for threads that are finishing). A leaked pipeline thread keeps its memory
    and its callbacks alive into later tests (a demo constructed but never run once did)."""
    before = set(threading.enumerate())

    def ours_left() -> list[threading.Thread]:
        return [
            t
            for t in threading.enumerate()
            if t not in before and t.name.startswith("mlsim-") and t.is_alive()
        ]

    yield
    deadline = time.monotonic() + 10.0
    while ours_left() and time.monotonic() < deadline:
        time.sleep(0.05)
    left = ours_left()
    if left:
        pytest.fail(f"threads still running after the test: {sorted(t.name for t in left)}")


@pytest.fixture(autouse=True)
def qt_garbage_freed_in_main_thread(request):
    """After a Qt test, destroy its closed widgets and collect their garbage here, in the main
    thread.

    pytest-qt closes a test's widgets and calls ``deleteLater``, which Qt carries out at some
    later event processing, and PyQt frees the slot objects of the deleted widgets with
    another ``deleteLater``. Left alone, a window of one test was destroyed during the next
    test, or its Python side freed by the cycle collector in a pipeline thread of a later test
    (the segmentation fault once seen in tests/test_trust_viewer.py). Flushing deferred
    deletions twice and collecting here makes every Qt test end with its objects gone.
    """
    yield
    uses_qt = request.node.get_closest_marker("qt") is not None or bool(
        {"qtbot", "qapp"} & set(request.fixturenames)
    )
    if not uses_qt or "PyQt5.QtWidgets" not in sys.modules:
        return
    from PyQt5 import QtWidgets
    from qt_cleanup import delete_deferred

    if QtWidgets.QApplication.instance() is None:
        return
    delete_deferred()
    gc.collect()


@pytest.fixture(autouse=True)
def pipeline_invariants(monkeypatch):
    """Check `mlsim_live.live.pipeline.INVARIANTS` on every pipeline a test closed.

    Every test that runs the pipeline (directly, through SIMProcessor, replay, demo or bench)
    ends with its counts checked: no frame and no group unaccounted.
    """
    from mlsim_live.live import pipeline as pipeline_module

    created: list = []
    original_init = pipeline_module.Pipeline.__init__

    def tracking_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        created.append(self)

    monkeypatch.setattr(pipeline_module.Pipeline, "__init__", tracking_init)
    yield created
    for pipeline in created:
        if pipeline.closed:
            # close is idempotent: a second call waits for the first to end and returns the
            # final summary (a test that never closed its pipeline is not checked)
            summary = pipeline.close(timeout=30)
            broken = pipeline_module.invariant_violations(summary)
            assert not broken, f"pipeline invariants broken: {broken}"


class FullDisk(io.FileIO):
    """A file that raises ENOSPC once ``quota`` bytes have been written."""

    quota = 0

    def write(self, data) -> int:  # type: ignore[override]
        if self.tell() + len(memoryview(data).cast("B")) > self.quota:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(n_bytes)``: SR files written from now on fill the disk after ``n_bytes``."""
    from mlsim_live.live import writer

    def fill_after(n_bytes: int) -> None:
        def opener(path):
            f = FullDisk(path, "w+b")
            f.quota = n_bytes
            return f

        monkeypatch.setattr(writer, "open_sr_file", opener)

    return fill_after


@pytest.fixture
def fake_reconstructor() -> type[FakeReconstructor]:
    """The FakeReconstructor class, to build fast, slow, gated or failing fakes."""
    return FakeReconstructor


@pytest.fixture(scope="session")
def mm_core():
    """A headless Micro-Manager core (pymmcore + mm-test-adapters) with the demo SIM config.

    Started once per test session through Pycro-Manager's Python backend (the backend allows
    one core per process); tests set the camera up as they need.
    """
    from mlsim_live.live.demo import start_demo_core

    return start_demo_core()
