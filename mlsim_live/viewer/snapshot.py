"""Viewer snapshots without Qt: which file names are accepted, and the TIFF of the images.

The window's picture (.png/.jpg/.bmp) is grabbed by the window itself; everything else about a
snapshot lives here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mlsim_live.errors import MLSimError
from mlsim_live.live.results import GroupResult

#: Picture formats of the window grab, by suffix (Qt's format names).
PICTURE_SUFFIXES = {".png": "PNG", ".jpg": "JPG", ".jpeg": "JPG", ".bmp": "BMP"}
TIFF_SUFFIXES = (".tif", ".tiff")


def check_snapshot_path(path: Path, *, overwrite: bool, have_images: bool) -> None:
    """Refuse a snapshot path before anything is written.

    Raises
    ------
    MLSimError
        Unknown suffix, missing folder, existing file without ``overwrite``, or a TIFF asked
        for while there are no images (``have_images`` False).
    """
    suffix = path.suffix.lower()
    if suffix not in PICTURE_SUFFIXES and suffix not in TIFF_SUFFIXES:
        raise MLSimError(
            f"snapshot {path.name!r} has suffix {suffix!r}; "
            "expected .png, .jpg, .bmp (window picture) or .tif, .tiff (images)"
        )
    if not path.parent.is_dir():
        raise MLSimError(f"folder {path.parent} does not exist; expected an existing folder")
    if path.exists() and not overwrite:
        raise MLSimError(f"{path} exists; expected a new file name, or overwrite to replace it")
    if suffix in TIFF_SUFFIXES and not have_images:
        raise MLSimError("no images to save yet; expected at least one reconstruction")


def _common_metadata(result: GroupResult) -> dict[str, Any]:
    """The JSON every series of a snapshot TIFF carries."""
    return {
        "index": int(result.index),
        "key": {
            str(k): v if isinstance(v, (bool, int, float, str)) else str(v)
            for k, v in result.key.items()
        },
        "reconstructor": result.reconstructor,
        "provider": result.provider,
        "simulated": bool(result.simulated),
        "latency_ms": float(result.latency_ms),
    }


def write_snapshot_tiff(result: GroupResult, path: Path) -> None:
    """Write ``result``'s images to ``path`` (a temporary file the caller moves into place).

    Three series: float32 widefield (H, W), float32 SR (sH, sW) and the raw group (9, H, W) as
    acquired when the result has it, each with JSON metadata (name, pixel size, group index
    and axes, reconstructor, provider, simulated, latency) and the pixel size as resolution.
    """
    import tifffile

    widefield = np.asarray(result.widefield, dtype=np.float32)
    sr = np.asarray(result.sr, dtype=np.float32)
    scale = sr.shape[-1] / widefield.shape[-1]
    common = _common_metadata(result)
    px = result.pixel_size_um
    series: list[tuple[str, np.ndarray, float | None]] = [
        ("widefield", widefield, px),
        ("sr", sr, px / scale if px else None),
    ]
    if result.raw is not None:
        series.append(("raw", np.asarray(result.raw), px))
    with tifffile.TiffWriter(path) as tif:
        for name, data, pixel_um in series:
            extra: dict[str, Any] = {}
            if pixel_um:  # pixels per centimetre
                extra = {"resolution": (1e4 / pixel_um,) * 2, "resolutionunit": "CENTIMETER"}
            metadata = {"name": name, "pixel_size_um": pixel_um, **common}
            tif.write(data, metadata=metadata, **extra)
