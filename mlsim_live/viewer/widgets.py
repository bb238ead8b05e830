"""The viewer's Qt widgets: a label that elides instead of widening its panel, and an image
panel (view, histogram/LUT, scale bar, levels kept per display kind)."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt import QtCore, QtGui, QtWidgets

from mlsim_live.errors import MLSimError
from mlsim_live.viewer.content import IMAGE, SPECTRUM, Rect
from mlsim_live.viewer.imaging import (
    IMAGE_PERCENTILES,
    SPECTRUM_PERCENTILES,
    auto_levels,
    format_length_um,
    scale_bar_um,
)

_BADGE_STYLE = (
    "QLabel {{ background: {bg}; color: white; font-weight: bold; "
    "padding: 3px 10px; border-radius: 4px; }}"
)


def qrect(rect: Rect) -> QtCore.QRectF:
    """``rect`` (x, y, width, height) as a Qt rectangle."""
    return QtCore.QRectF(*rect)


def badge(text: str, colour: str, tooltip: str) -> QtWidgets.QLabel:
    """A bold white-on-``colour`` label for the viewer's header."""
    label = QtWidgets.QLabel(text)
    label.setStyleSheet(_BADGE_STYLE.format(bg=colour))
    label.setToolTip(tooltip)
    return label


class ElidedLabel(QtWidgets.QLabel):
    """A one-line label that shows ``…`` instead of overflowing; the full text is its tooltip.

    It never asks for more width than it gets, so a long title or status line cannot widen a
    panel or push the window wider.
    """

    def __init__(self, text: str = "", elide: QtCore.Qt.TextElideMode | None = None) -> None:
        super().__init__()
        self._full_text = ""
        self._elide = QtCore.Qt.TextElideMode.ElideRight if elide is None else elide
        self.setSizePolicy(
            QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred
        )
        self.setText(text)

    def setText(self, text: str) -> None:  # Qt override
        """Set the full text; show as much of it as fits."""
        self._full_text = text
        self.setToolTip(text)
        self._update_elided()

    def text(self) -> str:  # Qt override
        """The full text, as set."""
        return self._full_text

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:  # Qt override
        """Re-elide for the new width."""
        super().resizeEvent(event)
        self._update_elided()

    def _update_elided(self) -> None:
        margins = self.contentsMargins()
        width = self.width() - margins.left() - margins.right() - 2 * self.margin() - 8
        shown = self.fontMetrics().elidedText(self._full_text, self._elide, max(width, 0))
        super().setText(shown)


class ImagePanel:
    """One image view with its title, histogram/LUT, scale bar and levels per display kind.

    Levels are automatic for each new frame until the user moves them in the histogram (or
    `set_levels` is called); then they are kept across frames until `reset_levels`. Images and
    spectra keep separate levels.
    """

    def __init__(self, title: str) -> None:
        self.widget = QtWidgets.QWidget()
        box = QtWidgets.QVBoxLayout(self.widget)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(0)
        self.title = ElidedLabel(title)  # a long title must not widen its panel
        self.title.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.title.setStyleSheet("QLabel { background: black; color: #d0d0d0; padding: 4px; }")
        self.graphics = pg.GraphicsLayoutWidget()
        self.view = self.graphics.addViewBox(row=0, col=0, lockAspect=True, invertY=True)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.view.addItem(self.image)
        self.hist = pg.HistogramLUTItem()
        self.hist.setImageItem(self.image)
        self.graphics.addItem(self.hist, row=0, col=1)
        box.addWidget(self.title)
        box.addWidget(self.graphics, 1)
        self.manual_levels: dict[str, tuple[float, float]] = {}
        self.kind = IMAGE
        self._updating = False
        self.hist.sigLevelsChanged.connect(self._on_levels_changed)
        self.scale_bar = pg.ScaleBar(size=1.0, width=6, brush="w", pen=pg.mkPen("k"))
        self.scale_bar.setParentItem(self.view)
        self.scale_bar.anchor(itemPos=(1, 1), parentPos=(1, 1), offset=(-24, -16))
        self.scale_bar.text.setColor("w")
        self.scale_bar.text.fill = pg.mkBrush(0, 0, 0, 140)  # readable over bright pixels
        self.scale_bar.setVisible(False)

    # -- levels ------------------------------------------------------------------------------
    def _on_levels_changed(self) -> None:
        if self._updating or self.image.image is None:
            return
        low, high = self.hist.getLevels()
        self.manual_levels[self.kind] = (float(low), float(high))

    def levels(self) -> tuple[float, float]:
        """Current display levels (low, high)."""
        low, high = self.hist.getLevels()
        return float(low), float(high)

    def set_levels(self, low: float, high: float) -> None:
        """Fix the levels for the current kind, as if the user had moved them."""
        if not high > low:
            raise MLSimError(f"levels ({low}, {high}) are not increasing; expected low < high")
        self.manual_levels[self.kind] = (float(low), float(high))
        self._apply_levels((float(low), float(high)))

    def reset_levels(self) -> None:
        """Return to automatic levels for the current kind and apply them now."""
        self.manual_levels.pop(self.kind, None)
        if self.image.image is not None:
            self._apply_levels(self._auto_levels(self.image.image))

    def _auto_levels(self, data: np.ndarray) -> tuple[float, float]:
        percentiles = SPECTRUM_PERCENTILES if self.kind == SPECTRUM else IMAGE_PERCENTILES
        return auto_levels(data, percentiles)

    def _apply_levels(self, levels: tuple[float, float]) -> None:
        self._updating = True
        try:
            self.image.setLevels(levels)
            self.hist.setLevels(*levels)
        finally:
            self._updating = False

    # -- content -----------------------------------------------------------------------------
    def show(self, data: np.ndarray, rect: Rect, kind: str) -> None:
        """Display ``data`` over ``rect`` (view coordinates) with the levels of ``kind``."""
        self.kind = kind
        levels = self.manual_levels.get(kind) or self._auto_levels(data)
        self._updating = True
        try:
            self.image.setImage(data, autoLevels=False, levels=levels)
            self.image.setRect(qrect(rect))
            self.hist.setLevels(*levels)
        finally:
            self._updating = False

    def set_scale_bar(self, pixel_size_um: float | None, width_px: int, visible: bool) -> None:
        """Show a scale bar for a view in raw-pixel coordinates, or hide it."""
        if not visible or pixel_size_um is None or not pixel_size_um > 0:
            self.scale_bar.setVisible(False)
            return
        length_um = scale_bar_um(width_px * pixel_size_um)
        self.scale_bar.size = length_um / pixel_size_um
        self.scale_bar.text.setText(format_length_um(length_um))
        self.scale_bar.updateBar()
        self.scale_bar.setVisible(True)

    def image_rect(self) -> QtCore.QRectF:
        """Where the image lies, in view coordinates."""
        return self.image.mapRectToView(self.image.boundingRect())
