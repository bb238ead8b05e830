"""The plugin's reader: raw SIM stacks (plain, ImageJ, OME-TIFF), reconstructions
(``*_sr.tif``) and trust maps (``*_trust.tif``) as napari layers with the right scale and names.

A file that is none of these (a single 2D image, RGB, a stack that is not 9*T frames) gets
None, so napari offers it to other readers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mlsim_live.errors import MLSimError, one_line
from mlsim_live.napari.layers import (
    LayerData,
    LazyStack,
    file_kind,
    raw_layer,
    reconstruction_file_layer,
)

log = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff")

PathOrPaths = str | os.PathLike[str] | list[str] | tuple[str, ...]
ReaderFunction = Callable[[PathOrPaths], list[LayerData]]


def napari_get_reader(path: PathOrPaths) -> ReaderFunction | None:
    """npe2 ``get_reader``: a function that reads ``path`` when every file is ours, else None.

    Each file is opened here to check it (headers only; no frames are read), so napari hears
    at once whether this plugin takes it.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths:
        return None
    for p in paths:
        try:
            _open(Path(p)).close()
        except MLSimError as exc:
            log.debug("not a SIM file for mlsim-live: %s", one_line(exc))
            return None
    return read_layers


def read_layers(path: PathOrPaths) -> list[LayerData]:
    """The layers of one or more files (see `napari_get_reader`)."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers = []
    for p in paths:
        opened = _open(Path(p))
        layers.append(opened.layer())
    return layers


class _Opened:
    """A checked file and how to make its layer."""

    def __init__(self, layer: Callable[[], LayerData], close: Callable[[], None]) -> None:
        self.layer = layer
        self.close = close


def _open(path: Path) -> _Opened:
    """Open and check a file; raise `MLSimError` when it is not one of ours."""
    if path.suffix.lower() not in TIFF_SUFFIXES or not path.is_file():
        raise MLSimError(f"{path}: expected a .tif or .tiff file")
    kind, stem = file_kind(path)
    if kind == "raw":
        from mlsim_live.io import read_raw_stack

        stack = read_raw_stack(path)
        return _Opened(lambda: raw_layer(stack, stem), stack.close)
    return _open_reconstruction(path, kind, stem)


def _open_reconstruction(path: Path, kind: str, stem: str) -> _Opened:
    """A ``*_sr.tif`` or ``*_trust.tif``: one 2D image or a stack of them."""
    from mlsim_live.io import read_tiff_metadata
    from mlsim_live.trust.output import ReconstructionFile

    images = ReconstructionFile.open(path)  # MLSimError when not a 2D image or 3D stack
    try:
        meta = read_tiff_metadata(path)
    except (OSError, ValueError) as exc:  # recoverable: the layer is shown in pixels
        log.warning("%s: cannot read its metadata (%s)", path, one_line(exc))
        meta = {"pixel_size_um": None, "metadata": {}}
    info = dict(meta["metadata"])
    info.update(_sidecar(path))

    def layer() -> LayerData:
        if images.n_groups == 1:
            data: Any = images.image(0)
        else:
            data = LazyStack((images.n_groups, *images.frame_shape), np.float32, images.image)
        return reconstruction_file_layer(path, kind, stem, data, meta["pixel_size_um"], info)

    return _Opened(layer, lambda: None)


def _sidecar(path: Path) -> dict[str, Any]:
    """Method and scale from ``<stem>.json`` beside a ``reconstruct`` output, when present."""
    import json

    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return {}
    try:
        doc = json.loads(sidecar.read_text())
    except (OSError, ValueError) as exc:
        log.warning("%s: ignoring its sidecar %s (%s)", path, sidecar.name, one_line(exc))
        return {}
    if not isinstance(doc, dict):
        return {}
    return {k: doc[k] for k in ("method", "reconstructor", "scale") if doc.get(k) is not None}
