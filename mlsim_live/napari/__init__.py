"""The napari plugin (the ``napari`` extra): a reader for raw SIM stacks and reconstructions, a
dock widget that reconstructs a raw layer, and a live SR layer fed by the pipeline.

A thin view over `mlsim_live`: `mlsim_live.napari.layers` and `mlsim_live.napari.reconstruct`
hold what the layers contain (no napari, no Qt), `reader`, `widget` and `live` put it on screen.
Nothing outside this package imports napari. Importing this package imports nothing heavy; the
live layer is loaded on first use::

    from mlsim_live.napari import LiveSRLayer

    sink = LiveSRLayer(viewer)        # in the GUI thread
    pipeline.add_sink(sink)           # newest reconstruction shown, never blocking the pipeline
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["LiveSRLayer", "ReconstructWidget", "napari_get_reader"]

if TYPE_CHECKING:  # pragma: no cover
    from mlsim_live.napari.live import LiveSRLayer
    from mlsim_live.napari.reader import napari_get_reader
    from mlsim_live.napari.widget import ReconstructWidget

_LAZY = {
    "LiveSRLayer": "mlsim_live.napari.live",
    "ReconstructWidget": "mlsim_live.napari.widget",
    "napari_get_reader": "mlsim_live.napari.reader",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mlsim_live.napari' has no attribute {name!r}")
