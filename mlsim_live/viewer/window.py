"""`SIMViewer`: widefield (or one raw frame) and super-resolution side by side, updated live."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt import QtCore, QtGui, QtWidgets

from mlsim_live.errors import MLSimError
from mlsim_live.io.atomic import atomic_path
from mlsim_live.live.results import GroupResult
from mlsim_live.viewer.content import N_RAW, check_raw_index, view_content
from mlsim_live.viewer.sink import ViewerSink
from mlsim_live.viewer.snapshot import (
    PICTURE_SUFFIXES,
    TIFF_SUFFIXES,
    check_snapshot_path,
    write_snapshot_tiff,
)
from mlsim_live.viewer.status import status_text
from mlsim_live.viewer.trust_overlay import NewestTrust, TrustMap, trust_rgba, trust_status
from mlsim_live.viewer.widgets import ElidedLabel, ImagePanel, badge, qrect

log = logging.getLogger(__name__)

StatsFn = Callable[[], Mapping[str, Any]]


class SIMViewer(QtWidgets.QMainWindow):
    """Live SIM viewer: widefield or a raw frame on the left, super-resolution on the right.

    Both views share pan and zoom; the SR image, on its finer grid, covers the same field of
    view as the widefield (view coordinates are raw camera pixels). Create it in the GUI
    thread; feed it through a `ViewerSink` (see `attach_sink`) or call `show_result`.

    Parameters
    ----------
    sink : ViewerSink, optional
        Where the reconstruction worker delivers results.
    stats_fn : callable, optional
        Returns the pipeline statistics for the status bar (keys of ``*_summary.json``);
        called in the GUI thread twice a second.
    on_close : callable, optional
        Called once, in the GUI thread, when the window closes (by the user, by
        `run_viewer` at the end of a run, or Ctrl+C): stop the acquisition there. It must
        return quickly and may be called after the acquisition has already finished.
    simulated : bool
        Show the 'SIMULATED' badge from the start (demo mode); it also appears for any result
        with ``simulated=True``.
    title : str
        Window title.
    status_interval_ms : int
        Refresh period of the status bar.

    Signals
    -------
    closed()
        The window was closed.
    trust_ready()
        A new trust map is waiting (emitted from the trust thread; see `attach_trust`).
    """

    closed = QtCore.Signal()
    trust_ready = QtCore.Signal()

    def __init__(
        self,
        sink: ViewerSink | None = None,
        *,
        stats_fn: StatsFn | None = None,
        on_close: Callable[[], None] | None = None,
        simulated: bool = False,
        title: str = "mlsim-live",
        status_interval_ms: int = 500,
        parent: QtWidgets.QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.stats_fn = stats_fn
        self.on_close = on_close
        self.n_displayed = 0
        self._sink: ViewerSink | None = None
        self._result: GroupResult | None = None
        self._raw_index: int | None = None
        self._spectrum = False
        self._simulated = bool(simulated)
        self._finished = False
        self._is_closed = False
        self._geometry_key: tuple[Any, ...] | None = None
        self._stats_failed = False
        self._display_failed = False
        self._trust_on = False
        self._trust_sink: Any = None
        self._trust_controls = True
        self._trust_newest = NewestTrust()
        self._trust: TrustMap | None = None
        self._build_ui()
        if sink is not None:
            self.attach_sink(sink)
        self._status_timer = QtCore.QTimer(self)
        self._status_timer.setInterval(int(status_interval_ms))
        self._status_timer.timeout.connect(lambda: self._guarded(self.update_status))
        self._status_timer.start()
        self._update_badges()
        self.update_status()

    # -- construction ------------------------------------------------------------------------
    def _build_ui(self) -> None:
        """Tool bar, header with badges, the two image panels, status bar and key shortcuts."""
        self._build_toolbar()
        header = self._build_header()
        self._build_panels(header)
        self.stats_label = ElidedLabel(elide=QtCore.Qt.TextElideMode.ElideMiddle)
        self.statusBar().addWidget(self.stats_label, 1)
        self._add_shortcuts()

    def _build_toolbar(self) -> None:
        """Left-image source, power spectrum, trust overlay, auto levels and snapshot."""
        toolbar = QtWidgets.QToolBar("View", self)
        toolbar.setMovable(False)
        self.addToolBar(toolbar)

        toolbar.addWidget(QtWidgets.QLabel(" Left: "))
        self.source_box = QtWidgets.QComboBox()
        self.source_box.addItem("Widefield (mean of 9)")
        for k in range(N_RAW):
            self.source_box.addItem(f"Raw {k}  (angle {k // 3}, phase {k % 3})")
        self.source_box.setToolTip("Widefield, or one raw frame of the group (keys W, 1-9)")
        self.source_box.currentIndexChanged.connect(
            lambda row: self._guarded(self._on_source_box, row)
        )
        toolbar.addWidget(self.source_box)
        toolbar.addSeparator()

        self.spectrum_box = QtWidgets.QCheckBox("Power spectrum (log)")
        self.spectrum_box.setToolTip(
            "Log power spectra: pattern peaks in raw frames, the SIM 'flower' in the SR (key F)"
        )
        self.spectrum_box.toggled.connect(lambda on: self._guarded(self.set_spectrum, on))
        toolbar.addWidget(self.spectrum_box)
        toolbar.addSeparator()

        self.trust_box = QtWidgets.QCheckBox("Trust overlay")
        self.trust_box.setToolTip(
            "Colour the SR pixels that the raw frames do not support (key T); mapped for the "
            "newest group on a low-priority thread, never delaying the reconstruction"
        )
        self.trust_box.toggled.connect(lambda on: self._guarded(self.set_trust_overlay, on))
        toolbar.addWidget(self.trust_box)
        toolbar.addSeparator()

        auto = QtWidgets.QPushButton("Auto levels")
        auto.setToolTip("Let both histograms follow each frame again (A)")
        auto.clicked.connect(lambda: self._guarded(self.reset_levels))
        toolbar.addWidget(auto)
        save = QtWidgets.QPushButton("Save snapshot…")
        save.setToolTip("PNG picture of the window, or TIFF of widefield, SR and raw frames")
        save.clicked.connect(lambda: self._guarded(self._on_save_clicked))
        toolbar.addWidget(save)

    def _build_header(self) -> QtWidgets.QWidget:
        """The line above the images: group info and the OOD and SIMULATED badges.

        Not in the tool bar, whose overflow menu could hide a badge.
        """
        header = QtWidgets.QWidget()
        header.setStyleSheet("QWidget { background: black; color: #d0d0d0; }")
        header_row = QtWidgets.QHBoxLayout(header)
        header_row.setContentsMargins(6, 3, 6, 3)
        self.info_label = ElidedLabel("waiting for the first SIM group…")
        header_row.addWidget(self.info_label, 1)
        self.ood_badge = badge(
            "OUTSIDE TRAINED RANGE",
            "#c77700",
            "This group falls outside the ranges the model was trained on",
        )
        header_row.addWidget(self.ood_badge)
        self.simulated_badge = badge(
            "SIMULATED", "#c62828", "Raw frames come from simulated SIM optics (demo mode)"
        )
        header_row.addWidget(self.simulated_badge)
        return header

    def _build_panels(self, header: QtWidgets.QWidget) -> None:
        """The linked left and SR panels (with the trust overlay) under ``header``."""
        self.left_panel = ImagePanel("Widefield")
        self.sr_panel = ImagePanel("Super-resolution")
        self.trust_item = pg.ImageItem(axisOrder="row-major")
        self.trust_item.setZValue(10)
        self.trust_item.setVisible(False)
        self.sr_panel.view.addItem(self.trust_item)
        self.trust_ready.connect(
            lambda: self._guarded(self._on_trust_ready), QtCore.Qt.ConnectionType.QueuedConnection
        )
        self.sr_panel.view.setXLink(self.left_panel.view)
        self.sr_panel.view.setYLink(self.left_panel.view)
        central = QtWidgets.QWidget()
        column = QtWidgets.QVBoxLayout(central)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        column.addWidget(header)
        row = QtWidgets.QHBoxLayout()
        row.setSpacing(2)
        row.addWidget(self.left_panel.widget, 1)
        row.addWidget(self.sr_panel.widget, 1)
        column.addLayout(row, 1)
        self.setCentralWidget(central)

    def _add_shortcuts(self) -> None:
        """Keys F, A, W, T and 1-9."""
        shortcuts: dict[str, Callable[[], None]] = {
            "F": lambda: self.set_spectrum(not self._spectrum),
            "A": self.reset_levels,
            "W": lambda: self.set_raw_frame(None),
            "T": lambda: self.set_trust_overlay(not self._trust_on),
        }
        for k in range(N_RAW):
            shortcuts[str(k + 1)] = partial(self.set_raw_frame, k)
        for key, slot in shortcuts.items():
            QtWidgets.QShortcut(
                QtGui.QKeySequence(key), self, activated=lambda f=slot: self._guarded(f)
            )

    def _guarded(self, slot: Callable[..., Any], *args: Any) -> None:
        """Run a Qt slot; log its exception instead of letting it abort the process.

        PyQt5 ends the application on an exception that escapes a slot, which would also end
        the acquisition running beside the viewer.
        """
        try:
            slot(*args)
        except Exception:
            log.exception("viewer: %s failed", getattr(slot, "__name__", slot))

    # -- feeding -----------------------------------------------------------------------------
    @property
    def sink(self) -> ViewerSink | None:
        """The attached sink, if any."""
        return self._sink

    def attach_sink(self, sink: ViewerSink) -> None:
        """Receive results from ``sink`` through queued (cross-thread safe) connections."""
        self._sink = sink
        queued = QtCore.Qt.ConnectionType.QueuedConnection
        sink.result_ready.connect(self._on_result_ready, queued)
        sink.finished.connect(self._on_sink_finished, queued)

    def refresh(self) -> bool:
        """Display the newest result waiting in the sink, if any; return True if one was shown."""
        if self._sink is None:
            return False
        result = self._sink.take()
        if result is None:
            return False
        self.show_result(result)
        return True

    def show_result(self, result: GroupResult) -> None:
        """Display ``result`` (GUI thread only)."""
        self._result = result
        self._redraw()
        self.n_displayed += 1

    @property
    def current_result(self) -> GroupResult | None:
        """The result on display."""
        return self._result

    @property
    def finished(self) -> bool:
        """True once the sink reported the end of the pipeline."""
        return self._finished

    def _on_result_ready(self) -> None:
        if self._is_closed:
            if self._sink is not None:
                self._sink.take()
            return
        try:
            self.refresh()
        except Exception:  # an odd result must not take the GUI (and the acquisition) down
            if not self._display_failed:
                log.exception("the viewer could not display a result")
                self._display_failed = True

    def _on_sink_finished(self) -> None:
        self._finished = True
        if not self._is_closed:
            self._on_result_ready()
            self.update_status()

    # -- view options ------------------------------------------------------------------------
    @property
    def raw_frame(self) -> int | None:
        """Raw frame shown on the left (0-8), or None for the widefield."""
        return self._raw_index

    def set_raw_frame(self, index: int | None) -> None:
        """Show raw frame ``index`` (0-8, angle-major) of the current group, or None: widefield."""
        self._raw_index = check_raw_index(index)
        self.source_box.blockSignals(True)
        self.source_box.setCurrentIndex(0 if self._raw_index is None else self._raw_index + 1)
        self.source_box.blockSignals(False)
        self._redraw()

    def _on_source_box(self, row: int) -> None:
        self.set_raw_frame(None if row <= 0 else row - 1)

    @property
    def spectrum(self) -> bool:
        """True while log power spectra are shown."""
        return self._spectrum

    def set_spectrum(self, on: bool) -> None:
        """Show log power spectra (True) or images (False)."""
        self._spectrum = bool(on)
        self.spectrum_box.blockSignals(True)
        self.spectrum_box.setChecked(self._spectrum)
        self.spectrum_box.blockSignals(False)
        self._redraw()

    def reset_levels(self) -> None:
        """Return both panels to automatic levels."""
        for panel in (self.left_panel, self.sr_panel):
            panel.reset_levels()

    def set_levels(self, panel: str, low: float, high: float) -> None:
        """Fix the levels of ``panel`` (``"left"`` or ``"sr"``) until `reset_levels`."""
        self._panel(panel).set_levels(low, high)

    def levels(self, panel: str) -> tuple[float, float]:
        """Current levels of ``panel`` (``"left"`` or ``"sr"``)."""
        return self._panel(panel).levels()

    def displayed_image(self, panel: str) -> np.ndarray | None:
        """The array shown in ``panel`` (``"left"`` or ``"sr"``): image or log power spectrum."""
        return self._panel(panel).image.image

    def _panel(self, name: str) -> ImagePanel:
        if name == "left":
            return self.left_panel
        if name == "sr":
            return self.sr_panel
        raise MLSimError(f"unknown panel {name!r}; expected 'left' or 'sr'")

    # -- trust overlay -----------------------------------------------------------------------
    def attach_trust(self, sink: Any, controls: bool = True) -> None:
        """Show the maps of ``sink`` (a `mlsim_live.trust.sink.TrustSink` the pipeline feeds)
        as the trust overlay. ``controls``: the sink maps only while the overlay is on (the
        viewer's own sink); False: it maps regardless (a run's sink that writes the maps)."""
        self._detach_trust()
        self._trust_sink = sink
        self._trust_controls = controls
        if controls:
            sink.enabled = self._trust_on
        sink.on_map = self._on_trust_map

    def _detach_trust(self) -> None:
        """Stop receiving the trust sink's maps.

        The sink's callback is a bound method of this window: left in place it would keep the
        window alive from the trust thread, and the window (with its Qt objects) would then be
        freed by whichever thread next runs Python's cycle collector, which Qt does not allow.
        """
        sink = self._trust_sink
        if sink is not None and sink.on_map == self._on_trust_map:
            sink.on_map = None
        self._trust_sink = None

    def _on_trust_map(self, index: int, key: Mapping[str, Any], result: Any) -> None:
        """Trust thread: keep the newest map and notify the GUI thread (never blocks)."""
        if self._is_closed:
            return
        trust_map = TrustMap(index, result.trust, float(result.figures.flagged_fraction))
        if self._trust_newest.put(trust_map):
            self.trust_ready.emit()

    def _on_trust_ready(self) -> None:
        waiting = self._trust_newest.take()
        if waiting is None or self._is_closed:
            return
        self._trust = waiting
        self._draw_trust()
        self.update_status()

    @property
    def trust_overlay(self) -> bool:
        """True while the trust overlay is on."""
        return self._trust_on

    def set_trust_overlay(self, on: bool) -> None:
        """Show the trust overlay on the SR image (True) or hide it; the trust thread maps
        groups only while it is on."""
        self._trust_on = bool(on)
        if self._trust_sink is not None and self._trust_controls:
            self._trust_sink.enabled = self._trust_on
        self.trust_box.blockSignals(True)
        self.trust_box.setChecked(self._trust_on)
        self.trust_box.blockSignals(False)
        self._draw_trust()
        self.update_status()

    def displayed_trust(self) -> np.ndarray | None:
        """The RGBA overlay on the SR image, or None when it is hidden."""
        if not self.trust_item.isVisible():
            return None
        return self.trust_item.image

    def _draw_trust(self) -> None:
        trust = self._trust
        result = self._result
        if not self._trust_on or self._spectrum or trust is None or result is None:
            self.trust_item.setVisible(False)
            return
        h, w = np.shape(result.widefield)[-2:]
        self.trust_item.setImage(trust_rgba(trust.trust), autoLevels=False)
        self.trust_item.setRect(QtCore.QRectF(0.0, 0.0, float(w), float(h)))
        self.trust_item.setVisible(True)

    # -- drawing -----------------------------------------------------------------------------
    def _redraw(self) -> None:
        """Show the current result in both panels as the view options say."""
        result = self._result
        self._update_badges()
        if result is None:
            return
        content = view_content(result, self._raw_index, self._spectrum)
        for panel, shown in ((self.left_panel, content.left), (self.sr_panel, content.sr)):
            panel.show(shown.data, shown.rect, content.kind)
            panel.title.setText(shown.title)
            panel.set_scale_bar(result.pixel_size_um, content.field_width_px, content.scale_bar)
        self._draw_trust()
        if content.geometry != self._geometry_key:  # new mode or image size: fit the view once
            self._geometry_key = content.geometry
            self.left_panel.view.setRange(rect=qrect(content.bounds()), padding=0.02)
        self.info_label.setText(content.info)

    def _update_badges(self) -> None:
        result = self._result
        self.simulated_badge.setVisible(self._simulated or bool(result and result.simulated))
        self.ood_badge.setVisible(bool(result and result.ood))

    @property
    def simulated_badge_shown(self) -> bool:
        """True while the 'SIMULATED' badge is on."""
        return not self.simulated_badge.isHidden()

    @property
    def ood_badge_shown(self) -> bool:
        """True while the 'OUTSIDE TRAINED RANGE' badge is on."""
        return not self.ood_badge.isHidden()

    # -- status ------------------------------------------------------------------------------
    def update_status(self) -> None:
        """Refresh the status bar from ``stats_fn`` and the newest result."""
        stats: Mapping[str, Any] | None = None
        if self.stats_fn is not None:
            try:
                stats = dict(self.stats_fn())
            except Exception:
                if not self._stats_failed:
                    log.warning("the viewer's stats_fn failed; status shows less", exc_info=True)
                    self._stats_failed = True
        result = self._result
        text = status_text(
            stats,
            sr_fps=self._sink.sr_fps() if self._sink is not None else None,
            provider=result.provider if result else None,
            model=result.reconstructor if result else None,
            latency_ms=result.latency_ms if result else None,
        )
        if self._trust_on:
            text += trust_status(self._trust)
        if self._finished:
            text += " · acquisition finished"
        self.stats_label.setText(text)

    def status_text(self) -> str:
        """The status-bar text as shown."""
        return self.stats_label.text()

    # -- snapshots ---------------------------------------------------------------------------
    def save_snapshot(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Save a picture of the window (.png/.jpg/.bmp) or the current images (.tif/.tiff).

        The TIFF holds three series, float32 widefield (H, W), float32 SR (sH, sW) and the raw
        group (9, H, W) as acquired, each with JSON metadata (group index and axes,
        reconstructor, provider, simulated, pixel size) and the pixel size as resolution.
        The file is written to a temporary name and moved into place.

        Raises
        ------
        MLSimError
            Unknown suffix, missing folder, existing file without ``overwrite``, or a TIFF
            requested before any result arrived.
        """
        path = Path(path)
        check_snapshot_path(path, overwrite=overwrite, have_images=self._result is not None)
        with atomic_path(path, overwrite=overwrite) as tmp:
            if path.suffix.lower() in TIFF_SUFFIXES:
                assert self._result is not None
                write_snapshot_tiff(self._result, tmp)
            elif not self.grab().save(str(tmp), PICTURE_SUFFIXES[path.suffix.lower()]):
                raise MLSimError(f"could not write the picture {path}; expected a writable file")
        log.info("saved viewer snapshot %s", path)
        return path

    def _on_save_clicked(self) -> None:
        index = self._result.index if self._result is not None else 0
        filters = "PNG picture of the window (*.png);;TIFF: widefield, SR and raw (*.tif)"
        name, chosen = QtWidgets.QFileDialog.getSaveFileName(
            self, "Save snapshot", f"mlsim_snapshot_{index:04d}.png", filters
        )
        if not name:
            return
        if not Path(name).suffix:
            name += ".tif" if "tif" in chosen else ".png"
        try:
            self.save_snapshot(name, overwrite=True)  # the dialog asked before replacing
        except (MLSimError, OSError) as exc:
            QtWidgets.QMessageBox.warning(self, "Snapshot not saved", str(exc))
        else:
            self.statusBar().showMessage(f"saved {name}", 5000)

    # -- closing -----------------------------------------------------------------------------
    @property
    def is_closed(self) -> bool:
        """True once the window has been closed."""
        return self._is_closed

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:  # Qt override
        """Stop the status timer, let go of the trust sink, call ``on_close`` once and emit
        ``closed``."""
        self._status_timer.stop()
        if not self._is_closed:
            self._is_closed = True
            self._detach_trust()
            if self.on_close is not None:
                try:
                    self.on_close()
                except Exception:
                    log.exception("the viewer's on_close callback failed")
            self.closed.emit()
        super().closeEvent(event)
