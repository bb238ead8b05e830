"""The dock widget: reconstructs the selected raw SIM layer with any method, off the GUI thread,
and adds its widefield and SR layers side by side (and, when asked, the trust map over the SR)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QWidget,
)

from mlsim_live.constants import METHODS, ORDERS
from mlsim_live.errors import MLSimError, one_line
from mlsim_live.napari.layers import META_KEY, LayerData
from mlsim_live.napari.reconstruct import (
    RawSource,
    Reconstruction,
    ReconstructSettings,
    reconstruct,
    result_layers,
)

if TYPE_CHECKING:  # pragma: no cover
    import napari

log = logging.getLogger(__name__)


class ReconstructWidget(QWidget):
    """Reconstruct a raw SIM layer: pick the layer and the method, press Reconstruct.

    The groups are reconstructed on a worker thread (napari's ``create_worker``); the layers
    ``"<stem> widefield"`` (over the raw frames), ``"<stem> SR <method>"`` (beside them, or over
    them) and ``"<stem> trust <method>"`` (over the SR) are added when it is done, or updated
    when they exist. A layer opened by this plugin's reader knows its frame order; for other
    layers (``9*T`` frames or ``T x 9`` groups) the order box says it.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (napari passes it when it docks the widget).

    Attributes
    ----------
    worker : GeneratorWorker or None
        The reconstruction in progress.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        from mlsim_live.recon import default_method

        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker: Any = None
        self._source: RawSource | None = None

        self.layer_box = QComboBox()
        self.layer_box.setToolTip("the raw SIM layer: 9*T frames, or T groups of 9")
        self.method_box = QComboBox()
        self.method_box.addItems(METHODS)
        self.method_box.setCurrentText(default_method(None, warn=False))
        self.order_box = QComboBox()
        self.order_box.addItems(ORDERS)
        self.order_box.setToolTip(
            "frame order of a layer not opened by mlsim-live: a0p0 a0p1 ... or p0a0 p0a1 ..."
        )
        self.trust_box = QCheckBox("trust map over the SR")
        self.trust_box.setToolTip("flag where the raw frames do not support the reconstruction")
        self.side_box = QCheckBox("SR beside the raw frames")
        self.side_box.setChecked(True)
        self.run_button = QPushButton("Reconstruct")
        self.run_button.clicked.connect(self._on_button)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout(self)
        form.addRow("raw layer", self.layer_box)
        form.addRow("method", self.method_box)
        form.addRow("frame order", self.order_box)
        form.addRow(self.trust_box)
        form.addRow(self.side_box)
        form.addRow(self.run_button)
        form.addRow(self.progress)
        form.addRow(self.status)

        events = self.viewer.layers.events
        events.inserted.connect(self._refresh_layers)
        events.removed.connect(self._refresh_layers)
        events.moved.connect(self._refresh_layers)
        self.viewer.layers.selection.events.active.connect(self._follow_selection)
        self._refresh_layers()

    # -- layer choice ------------------------------------------------------------------------
    def raw_layers(self) -> list[Any]:
        """Image layers whose data can be read as raw SIM groups."""
        found = []
        for layer in self.viewer.layers:
            if layer._type_string != "image":
                continue
            try:
                self._source_of(layer)
            except MLSimError:
                continue
            found.append(layer)
        return found

    def _refresh_layers(self, event: Any = None) -> None:
        current = self.layer_box.currentText()
        names = [layer.name for layer in self.raw_layers()]
        self.layer_box.blockSignals(True)
        self.layer_box.clear()
        self.layer_box.addItems(names)
        active = self.viewer.layers.selection.active
        if current in names:
            self.layer_box.setCurrentText(current)
        elif active is not None and active.name in names:
            self.layer_box.setCurrentText(active.name)
        self.layer_box.blockSignals(False)
        for layer in self.viewer.layers:  # a renamed layer is renamed here too (no duplicates)
            layer.events.name.connect(self._refresh_layers)

    def _follow_selection(self, event: Any = None) -> None:
        active = self.viewer.layers.selection.active
        if active is not None and self.layer_box.findText(active.name) >= 0:
            self.layer_box.setCurrentText(active.name)

    def select_layer(self, name: str) -> None:
        """Choose the raw layer by name."""
        if self.layer_box.findText(name) < 0:
            names = [self.layer_box.itemText(i) for i in range(self.layer_box.count())]
            raise MLSimError(f"layer {name!r} is not a raw SIM layer; expected one of {names}")
        self.layer_box.setCurrentText(name)

    def _source_of(self, layer: Any) -> RawSource:
        return RawSource.of_layer(
            layer.data,
            name=layer.name,
            scale=layer.scale,
            translate=layer.translate,
            metadata=layer.metadata,
            order=self.order_box.currentText(),
            rgb=bool(getattr(layer, "rgb", False)),
            units=getattr(layer, "units", None),
        )

    # -- running -----------------------------------------------------------------------------
    def _on_button(self) -> None:
        if self.worker is not None:
            self.worker.quit()
            self.status.setText("cancelling ...")
            return
        self.run()

    def run(self) -> Any:
        """Start reconstructing the chosen layer; return the worker (None on bad input)."""
        from napari.qt.threading import create_worker

        name = self.layer_box.currentText()
        try:
            if not name or name not in self.viewer.layers:
                raise MLSimError("no raw SIM layer chosen; expected a layer of 9*T frames")
            source = self._source_of(self.viewer.layers[name])
            settings = ReconstructSettings(
                method=self.method_box.currentText(), trust=self.trust_box.isChecked()
            )
        except MLSimError as exc:
            self._fail(exc)
            return None
        self._source = source
        self.progress.setRange(0, source.n_groups)
        self.progress.setValue(0)
        self.status.setText(f"reconstructing {source.n_groups} group(s) with {settings.method}")
        worker = create_worker(reconstruct, source, settings, _ignore_errors=True)
        worker.yielded.connect(self.progress.setValue)
        worker.returned.connect(self._on_done)
        worker.errored.connect(self._fail)
        worker.aborted.connect(lambda: self.status.setText("cancelled"))
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.run_button.setText("Cancel")
        worker.start()
        return worker

    def _on_done(self, result: Reconstruction) -> None:
        source = self._source
        if source is None:
            return
        layers = result_layers(source, result, side_by_side=self.side_box.isChecked())
        for data in layers:
            self._show(data)
        self.status.setText(
            f"{source.n_groups} group(s): {result.reconstructor} on {result.provider}"
        )

    def _show(self, layer_data: LayerData) -> None:
        """Add a layer, or update the layer of that name made earlier."""
        data, kwargs, _ = layer_data
        name = kwargs["name"]
        if name in self.viewer.layers:
            old = self.viewer.layers[name]
            if old.ndim == getattr(data, "ndim", 0) and old.metadata.get(META_KEY):
                old.data = data
                for key in ("scale", "translate", "contrast_limits", "metadata"):
                    if key in kwargs:
                        setattr(old, key, kwargs[key])
                return
            self.viewer.layers.remove(old)
        self.viewer.add_image(data, **kwargs)

    def _fail(self, exc: BaseException) -> None:
        if isinstance(exc, MLSimError):
            message = str(exc)
        else:
            message = f"unexpected {type(exc).__name__}: {one_line(exc)}"
            log.error("reconstruction failed", exc_info=exc)
        self.status.setText(message)
        log.warning("%s", message)

    def _on_finished(self) -> None:
        self.worker = None
        self.run_button.setText("Reconstruct")
