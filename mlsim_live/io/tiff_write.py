"""Write reconstructions as ImageJ TIFF files, atomically, and read back what was written."""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mlsim_live.errors import MLSimError
from mlsim_live.io.atomic import atomic_path
from mlsim_live.io.tiff_metadata import _imagej_pixel_um, _resolution_pixel_um
from mlsim_live.io.tifffile_log import _tifffile

log = logging.getLogger(__name__)


_IMAGEJ_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


def _output_dtype(dtype: np.dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.kind not in "iuf":
        raise MLSimError(f"cannot write pixel type {dtype.name}; expected integer or float data")
    return dtype if dtype in _IMAGEJ_DTYPES else np.dtype(np.float32)


def _imagej_kwargs(
    ndim: int, pixel_size_um: float | None, metadata: dict[str, Any] | None, axes: str | None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"axes": axes or ("YX" if ndim == 2 else "TYX")}
    kwargs: dict[str, Any] = {}
    if pixel_size_um is not None:
        if not (math.isfinite(pixel_size_um) and pixel_size_um > 0):
            raise MLSimError(f"pixel size {pixel_size_um} um; expected a positive number")
        meta["unit"] = "um"
        kwargs["resolution"] = (1.0 / pixel_size_um, 1.0 / pixel_size_um)
    if metadata:
        meta["Info"] = json.dumps(metadata, default=str)
    kwargs["metadata"] = meta
    return kwargs


def write_tiff_atomic(
    path: str | os.PathLike[str],
    data: np.ndarray,
    pixel_size_um: float | None = None,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
    *,
    axes: str | None = None,
) -> Path:
    """Write a 2D image or a 3D stack as an ImageJ TIFF, atomically.

    Parameters
    ----------
    path : path-like
        Output file; its folder must exist.
    data : ndarray, shape (H, W) or (T, H, W)
        uint8, uint16 and float32 are written as they are; other numeric types as float32.
    pixel_size_um : float, optional
        Written into the resolution tags and the ImageJ metadata (unit ``um``).
    metadata : dict, optional
        JSON-able extras, stored as JSON in the ImageJ ``Info`` property.
    overwrite : bool
        Replace an existing file; without it an existing output raises `MLSimError`.
    axes : str, optional
        ImageJ axes, default ``"YX"`` or ``"TYX"``.

    Returns
    -------
    Path
        The written file. Nothing is left behind on error.
    """
    data = np.asarray(data)
    if data.ndim not in (2, 3):
        raise MLSimError(f"{path}: data of shape {data.shape}; expected (H, W) or (T, H, W)")
    dtype = _output_dtype(data.dtype)
    kwargs = _imagej_kwargs(data.ndim, pixel_size_um, metadata, axes)
    tifffile = _tifffile()
    with atomic_path(path, overwrite=overwrite) as tmp:
        tifffile.imwrite(tmp, data.astype(dtype, copy=False), imagej=True, **kwargs)
    log.debug("wrote %s", path)
    return Path(path)


def write_tiff_stack_atomic(
    path: str | os.PathLike[str],
    frames: Iterable[np.ndarray],
    shape: tuple[int, int, int],
    pixel_size_um: float | None = None,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
    *,
    dtype: Any = np.float32,
) -> Path:
    """Stream ``shape[0]`` frames into a ``(T, H, W)`` ImageJ TIFF, atomically.

    Frames are written as they come, so the whole stack is never held in memory. If the
    iterator raises or yields a frame of the wrong shape, the temporary file is removed and
    nothing appears at ``path``.

    Parameters
    ----------
    path : path-like
        Output file.
    frames : iterable of ndarray (H, W)
        Exactly ``shape[0]`` frames.
    shape : (T, H, W)
        Shape of the stack.
    pixel_size_um, metadata, overwrite
        As in `write_tiff_atomic`.
    dtype : numpy dtype
        Pixel type written (default float32).
    """
    n_frames, height, width = (int(s) for s in shape)
    out_dtype = _output_dtype(np.dtype(dtype))
    kwargs = _imagej_kwargs(3, pixel_size_um, metadata, "TYX")

    def checked() -> Iterator[np.ndarray]:
        count = 0
        for frame in frames:
            frame = np.asarray(frame)
            if frame.shape != (height, width):
                raise MLSimError(
                    f"{path}: frame {count} has shape {frame.shape}; expected {(height, width)}"
                )
            if count >= n_frames:
                raise MLSimError(f"{path}: more than {n_frames} frames; expected {n_frames}")
            count += 1
            yield np.ascontiguousarray(frame, dtype=out_dtype)
        if count != n_frames:
            raise MLSimError(f"{path}: got {count} frames; expected {n_frames}")

    tifffile = _tifffile()
    with atomic_path(path, overwrite=overwrite) as tmp, warnings.catch_warnings():
        # ImageJ stacks over 4 GB keep one IFD ("truncated"), which ImageJ and tifffile read
        warnings.filterwarnings("ignore", message=".*truncating ImageJ file", category=UserWarning)
        with tifffile.TiffWriter(tmp, imagej=True) as writer:
            writer.write(checked(), shape=(n_frames, height, width), dtype=out_dtype, **kwargs)
    log.debug("wrote %s", path)
    return Path(path)


def read_tiff_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the JSON extras and pixel size that `write_tiff_atomic` stored in ``path``.

    Files of the live SR writer (`mlsim_live.live.writer`) are read too: their pixel size from
    the resolution tags, their extras from the first page's JSON description.
    """
    tifffile = _tifffile()
    with tifffile.TiffFile(path) as tif:
        meta = tif.imagej_metadata or {}
        info = meta.get("Info")
        extras = json.loads(info) if info else _description_json(tif)
        pixel = _imagej_pixel_um(tif) if meta else _resolution_pixel_um(tif)
        return {"pixel_size_um": pixel, "metadata": extras}


def _description_json(tif: Any) -> dict[str, Any]:
    """The first page's JSON description when the live SR writer wrote it, else ``{}``."""
    try:
        extras = json.loads(tif.pages.first.description or "")
    except ValueError:
        return {}
    return extras if isinstance(extras, dict) and "mlsim_live" in extras else {}
