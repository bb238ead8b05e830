"""Open the live viewer for demo, live and replay runs, and run its event loop to the end."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pyqtgraph as pg
from pyqtgraph.Qt import QtCore, QtWidgets

from mlsim_live.errors import MLSimError
from mlsim_live.viewer.gui_gc import gui_thread_gc
from mlsim_live.viewer.sink import ViewerSink
from mlsim_live.viewer.snapshot import PICTURE_SUFFIXES
from mlsim_live.viewer.window import SIMViewer, StatsFn

log = logging.getLogger(__name__)

T = TypeVar("T")


def ensure_app() -> QtWidgets.QApplication:
    """Return the running QApplication, creating it if needed (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        raise MLSimError(
            "the viewer was started outside the main thread; expected the main thread (Qt needs it)"
        )
    app = pg.mkQApp("mlsim-live")
    assert isinstance(app, QtWidgets.QApplication)
    return app


def open_viewer(
    *,
    stats_fn: StatsFn | None = None,
    on_close: Callable[[], None] | None = None,
    simulated: bool = False,
    title: str = "mlsim-live",
    show: bool = True,
    size: tuple[int, int] = (1280, 720),
) -> tuple[SIMViewer, ViewerSink]:
    """Create the QApplication if needed, a `SIMViewer` and the `ViewerSink` that feeds it.

    Call in the main thread, before starting the acquisition; hand the sink to the pipeline
    (it calls ``sink.on_result`` from its worker thread and ``sink.close()`` at the end),
    then call `run_viewer`.

    Parameters
    ----------
    stats_fn : callable, optional
        Pipeline statistics for the status bar (e.g. ``pipeline.summary``).
    on_close : callable, optional
        Called once when the window closes: stop the acquisition there (quickly, idempotent).
    simulated : bool
        Show the 'SIMULATED' badge from the start (demo mode).
    title : str
        Window title.
    show : bool
        Show the window now.
    size : (int, int)
        Window width and height in pixels.

    Returns
    -------
    window : SIMViewer
    sink : ViewerSink
    """
    ensure_app()
    sink = ViewerSink()
    window = SIMViewer(sink, stats_fn=stats_fn, on_close=on_close, simulated=simulated, title=title)
    window.resize(*size)
    if show:
        window.show()
    return window, sink


def check_screenshot_path(path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Check a ``--screenshot`` path before the run starts; return it as a Path.

    Raises
    ------
    MLSimError
        Not a .png/.jpg/.bmp name, missing folder, or an existing file without ``overwrite``.
    """
    path = Path(path)
    if path.suffix.lower() not in PICTURE_SUFFIXES:
        raise MLSimError(
            f"screenshot {path.name!r} has suffix {path.suffix!r}; expected .png, .jpg or .bmp"
        )
    if not path.parent.is_dir():
        raise MLSimError(f"folder {path.parent} does not exist; expected an existing folder")
    if path.exists() and not overwrite:
        raise MLSimError(f"{path} exists; expected a new file name, or --overwrite to replace it")
    return path


def run_viewer(
    window: SIMViewer,
    *,
    done: Callable[[], bool] | None = None,
    screenshot: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    close_when_done: bool = False,
    timeout_s: float | None = None,
    poll_ms: int = 100,
) -> bool:
    """Run the Qt event loop until the window is closed; return True if the run finished first.

    The run counts as finished when the pipeline closes the window's sink, or when ``done()``
    returns True (polled every ``poll_ms``), or after ``timeout_s``. Then the newest result is
    displayed, the screenshot (if asked) is saved, and the window is closed if a screenshot was
    asked or ``close_when_done``; otherwise it stays open until the user closes it. Closing the
    window calls its ``on_close``. Ctrl+C closes the window too.

    Parameters
    ----------
    window : SIMViewer
        From `open_viewer`.
    done : callable, optional
        Extra end condition, e.g. ``lambda: not acquisition_thread.is_alive()``. Prefer the
        sink being closed: ``done`` can fire while the last reconstruction is still running.
    screenshot : path, optional
        PNG (or .jpg/.bmp) picture of the window to save at the end of the run.
    overwrite : bool
        Replace an existing screenshot file.
    close_when_done : bool
        Close the window when the run finishes, even without a screenshot.
    timeout_s : float, optional
        Finish after this many seconds at most.
    poll_ms : int
        Polling period of ``done`` and of Ctrl+C.

    Returns
    -------
    bool
        True when the run finished before the window was closed, False when the user closed
        the window first (the acquisition was stopped through ``on_close``).

    Raises
    ------
    MLSimError
        A bad screenshot path (checked before the loop starts) or a failed save.
    """
    ensure_app()
    shot = check_screenshot_path(screenshot, overwrite) if screenshot is not None else None
    if window.is_closed:
        return window.finished
    loop = _ViewerLoop(window, done, shot, overwrite, close_when_done, timeout_s)
    loop.run(poll_ms)
    if shot is not None and loop.finished:
        log.info("screenshot saved to %s", shot)
    return loop.finished


class _ViewerLoop:
    """The Qt event loop of `run_viewer`: polls for the end of the run, then finishes once
    (last result shown, screenshot saved, window closed when asked)."""

    def __init__(
        self,
        window: SIMViewer,
        done: Callable[[], bool] | None,
        shot: Path | None,
        overwrite: bool,
        close_when_done: bool,
        timeout_s: float | None,
    ) -> None:
        self.window = window
        self.done = done
        self.shot = shot
        self.overwrite = overwrite
        self.close_when_done = close_when_done
        self.timeout_s = timeout_s
        self.finished = False
        self.error: BaseException | None = None
        self._started = time.monotonic()

    def finish(self) -> None:
        """Show the newest result and status, save the screenshot, close when asked (once)."""
        window = self.window
        if self.finished or window.is_closed:
            return
        self.finished = True
        try:
            window.refresh()
            window.update_status()
            QtWidgets.QApplication.processEvents()
            if self.shot is not None:
                window.save_snapshot(self.shot, overwrite=self.overwrite)
        except Exception as exc:  # keep the loop alive; re-raised after it ends
            self.error = exc
        if self.shot is not None or self.close_when_done or self.error is not None:
            window.close()

    def poll(self) -> None:
        """Finish when ``done()`` says so or the time limit is reached."""
        if self.finished:
            return
        timeout_s = self.timeout_s
        timed_out = timeout_s is not None and time.monotonic() - self._started >= timeout_s
        try:
            ready = timed_out or (self.done is not None and bool(self.done()))
        except Exception as exc:
            self.error = exc
            ready = True
        if timed_out:
            log.info("viewer: time limit of %.1f s reached", timeout_s)
        if ready:
            self.finish()

    def run(self, poll_ms: int) -> None:
        """Run the event loop until the window closes; Ctrl+C closes it; re-raise an error.

        Meanwhile Python's cycle collector runs only in this thread (`gui_thread_gc`)."""
        window = self.window
        loop = QtCore.QEventLoop()
        timer = QtCore.QTimer()
        timer.setInterval(max(10, int(poll_ms)))
        timer.timeout.connect(self.poll)
        window.closed.connect(loop.quit)
        sink = window.sink
        if sink is not None:
            sink.finished.connect(self.finish, QtCore.Qt.ConnectionType.QueuedConnection)
            if sink.closed:
                QtCore.QTimer.singleShot(0, self.finish)
        previous_handler = None
        if threading.current_thread() is threading.main_thread():
            previous_handler = signal.signal(
                signal.SIGINT, lambda *_: QtCore.QTimer.singleShot(0, window.close)
            )
        timer.start()
        try:
            if not window.is_closed:
                with gui_thread_gc():  # pipeline threads must not free Qt objects
                    loop.exec_()
        finally:
            timer.stop()
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)
            window.closed.disconnect(loop.quit)
            if sink is not None:
                sink.finished.disconnect(self.finish)
        if self.error is not None:
            raise self.error


def run_with_viewer(
    job: Callable[[], T],
    stop: Callable[[], None],
    *,
    add_sink: Callable[[Any], None],
    stats_fn: StatsFn | None = None,
    simulated: bool = False,
    title: str = "mlsim-live",
    screenshot: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    optics: Any = None,
    trust_sink: Any = None,
) -> T:
    """Run ``job`` (an acquisition or a replay) on a thread while the viewer owns the main thread.

    Closing the window calls ``stop``; the job then finishes what it has (queued groups are
    reconstructed and saved) and its return value is returned here. An exception in the job
    is re-raised in the main thread.

    Parameters
    ----------
    job : callable
        Runs the whole acquisition or replay and returns its summary.
    stop : callable
        Asks the job to stop early (idempotent).
    add_sink : callable
        Registers the viewer's sink with the job's pipeline.
    stats_fn, simulated, title
        As for `open_viewer`.
    screenshot, overwrite
        As for `run_viewer`.
    optics : Optics, optional
        The optics the run knows (NA, wavelength, pixel size), for the trust overlay's pattern
        estimate; None: estimated from the data.
    trust_sink : TrustSink, optional
        The run's own trust sink (``--trust``): the overlay shows its maps. Without one the
        viewer adds its own, which maps the newest group only while the overlay is on.
    """
    window, sink = open_viewer(stats_fn=stats_fn, on_close=stop, simulated=simulated, title=title)
    add_sink(sink)
    if trust_sink is not None:
        window.attach_trust(trust_sink, controls=False)
    else:
        from mlsim_live.trust.sink import TrustSink

        own = TrustSink(optics, every=False)  # maps only while the overlay is on (key T)
        window.attach_trust(own)
        add_sink(own)
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = job()
        except BaseException as exc:  # handed to the main thread
            outcome["error"] = exc

    thread = threading.Thread(target=work, name="mlsim-run", daemon=True)
    thread.start()
    try:
        run_viewer(
            window, done=lambda: not thread.is_alive(), screenshot=screenshot, overwrite=overwrite
        )
    finally:
        stop()
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]
