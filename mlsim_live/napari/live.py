"""A live SR layer: a pipeline sink that shows the newest reconstruction in one napari layer.

Works with any frame source of the pipeline (Pycro-Manager, pymmcore-plus, replay): the sink
takes results on the reconstruction worker's thread and the layer changes on the GUI thread.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import QObject, Signal

from mlsim_live.live.newest import Newest
from mlsim_live.live.results import GroupResult
from mlsim_live.napari.layers import META_KEY, LayerData, RawGeometry, group_image_layer

if TYPE_CHECKING:  # pragma: no cover
    import napari

log = logging.getLogger(__name__)


class LiveSRLayer(QObject):
    """Pipeline sink (`mlsim_live.live.sinks.Sink`) that keeps one napari layer on the newest
    reconstruction, coalesced as the live viewer's `ViewerSink` is.

    ``on_result`` (any thread) only stores the result, replacing one the GUI has not shown yet,
    and posts one notification when none is pending: it never waits for the GUI, so a busy
    viewer never slows the pipeline, and the GUI event queue never holds more than one update.
    The GUI thread then shows the newest result: layer ``"<stem> SR"`` (and
    ``"<stem> widefield"``), added on the first result and updated in place after (re-added if
    the user deleted it).

    Create it in the GUI thread, then hand it to the pipeline (``Pipeline(..., sinks=[layer])``
    or ``pipeline.add_sink(layer)``).

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    stem : str
        Layer names: ``"<stem> SR"`` and ``"<stem> widefield"``.
    widefield : bool
        Also show the widefield (mean of the group's frames).
    side_by_side : bool
        Put the SR beside the widefield instead of over it.
    auto_contrast : bool
        Re-level the SR's contrast on every update (else only when the layer is added).

    Signals
    -------
    finished()
        The pipeline closed the sink: no more results will come.
    """

    finished = Signal()
    _ready = Signal()

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        stem: str = "live",
        *,
        widefield: bool = True,
        side_by_side: bool = True,
        auto_contrast: bool = True,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.stem = stem
        self.widefield = widefield
        self.side_by_side = side_by_side
        self.auto_contrast = auto_contrast
        self._lock = threading.Lock()
        self._newest: Newest[GroupResult] = Newest()
        self._shown = 0
        self._shown_index: int | None = None
        # emitted from the worker thread: Qt queues the call to this object's (the GUI) thread
        self._ready.connect(self._show)

    # -- pipeline side (any thread) ------------------------------------------------------------
    def on_result(self, result: GroupResult) -> None:
        """Keep ``result`` as the newest and notify the GUI once (thread-safe, never blocks)."""
        if self._newest.put(result):
            self._ready.emit()

    def close(self) -> None:
        """No more results (thread-safe, idempotent); emits ``finished``."""
        if self._newest.close():
            self.finished.emit()

    # -- GUI side ----------------------------------------------------------------------------
    def take(self) -> GroupResult | None:
        """The newest result not shown yet, or None; clears the pending notification."""
        return self._newest.take()

    def _show(self) -> None:
        result = self.take()
        if result is None:
            return
        for layer_data in self.layers_of(result):
            self._update(layer_data)
        with self._lock:
            self._shown += 1
            self._shown_index = result.index

    def layers_of(self, result: GroupResult) -> list[LayerData]:
        """The layers showing ``result``: widefield (when asked) and SR, placed by its pixel
        size (µm when known, else raw pixels)."""
        raw_hw = tuple(int(s) for s in result.raw.shape[-2:])
        geometry = RawGeometry.of_file(1, raw_hw, result.pixel_size_um)  # type: ignore[arg-type]
        factor = result.sr.shape[-1] / raw_hw[1]
        offset = geometry.side_offset() if self.widefield and self.side_by_side else 0.0
        info = {
            "index": result.index,
            "key": dict(result.key),
            "reconstructor": result.reconstructor,
            "provider": result.provider,
            "latency_ms": round(result.latency_ms, 3),
            "simulated": result.simulated,
            "live": True,
        }
        layers = []
        if self.widefield:
            layers.append(
                group_image_layer(
                    result.widefield, geometry, kind="widefield", stem=self.stem, metadata=info
                )
            )
        layers.append(
            group_image_layer(
                result.sr,
                geometry,
                kind="sr",
                stem=self.stem,
                factor=factor,
                offset_x=offset,
                metadata=info,
            )
        )
        return layers

    def _update(self, layer_data: LayerData) -> None:
        data, kwargs, _ = layer_data
        name = kwargs["name"]
        layers = self.viewer.layers
        if name not in layers:
            self.viewer.add_image(data, **kwargs)
            return
        layer = layers[name]
        if layer.ndim != np.ndim(data):
            layers.remove(layer)
            self.viewer.add_image(data, **kwargs)
            return
        layer.data = data
        if not np.allclose(layer.scale, kwargs["scale"]) or not np.allclose(
            layer.translate, kwargs["translate"]
        ):
            layer.scale, layer.translate = kwargs["scale"], kwargs["translate"]
        if self.auto_contrast:
            layer.contrast_limits = kwargs["contrast_limits"]
        layer.metadata = {**layer.metadata, META_KEY: kwargs["metadata"][META_KEY]}

    # -- figures -----------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True once the pipeline closed the sink."""
        return self._newest.closed

    @property
    def n_received(self) -> int:
        """Results handed to `on_result`."""
        return self._newest.counts()[0]

    @property
    def n_shown(self) -> int:
        """Results shown in the layer."""
        with self._lock:
            return self._shown

    @property
    def n_coalesced(self) -> int:
        """Results replaced by a newer one before the GUI showed them."""
        return self._newest.counts()[2]

    @property
    def shown_index(self) -> int | None:
        """``GroupResult.index`` of the result in the layer (None before the first)."""
        with self._lock:
            return self._shown_index


__all__ = ["LiveSRLayer"]
