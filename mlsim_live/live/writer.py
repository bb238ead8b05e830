"""Live outputs: reconstructions appended to ``<name>_sr.tif`` as they arrive, and the summary JSON.

The SR file is a BigTIFF with one page per group (so ``tifffile.imread`` gives a T x 2H x 2W
stack). Each page carries the group's metadata as JSON in its ImageDescription and the SR pixel
size (the raw pixel size divided by the reconstructor's scale) in its resolution tags. The file is
flushed after every group, so it is a valid TIFF at any time and a crash loses at most the group
in flight.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mlsim_live import __version__
from mlsim_live.io import write_json_atomic
from mlsim_live.io.atomic import check_writable
from mlsim_live.live.results import GroupResult

log = logging.getLogger(__name__)

SR_SUFFIX = "_sr.tif"
SUMMARY_SUFFIX = "_summary.json"


def output_paths(out_dir: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """``(<out_dir>/<name>_sr.tif, <out_dir>/<name>_summary.json)``."""
    out = Path(out_dir)
    return out / f"{name}{SR_SUFFIX}", out / f"{name}{SUMMARY_SUFFIX}"


def check_outputs_free(paths: Iterable[str | os.PathLike[str]], overwrite: bool = False) -> None:
    """Raise MLSimError when an output exists already and ``overwrite`` is False."""
    for path in paths:
        check_writable(Path(path), overwrite)


def write_summary(
    path: str | os.PathLike[str], summary: Mapping[str, Any], overwrite: bool = False
) -> Path:
    """Write a summary dict as JSON atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(path, dict(summary), overwrite=overwrite)


def result_metadata(result: GroupResult) -> dict[str, Any]:
    """The per-group metadata stored with each SR page."""
    raw_h, raw_w = result.raw.shape[-2:]
    scale = result.sr.shape[-1] / raw_w if raw_w else 1.0
    return {
        "mlsim_live": __version__,
        "index": result.index,
        "axes": result.key,
        "first_frame_at": result.extra.get("first_frame_at"),
        "completed_at": result.completed_at,
        "latency_ms": round(result.latency_ms, 3),
        "reconstruct_ms": round(result.reconstruct_ms, 3),
        "reconstructor": result.reconstructor,
        "provider": result.provider,
        "scale": scale,
        "raw_shape": [int(raw_h), int(raw_w)],
        "raw_pixel_size_um": result.pixel_size_um,
        "pixel_size_um": result.pixel_size_um / scale if result.pixel_size_um else None,
        "simulated": result.simulated,
        "ood": result.ood,
    }


class SRTiffWriter:
    """Sink that appends each reconstruction to a BigTIFF as it arrives.

    The file is created on the first result (a run without results leaves no file). Results
    that arrive after :meth:`close` are logged and ignored: the file is never reopened (which
    would truncate it).

    Parameters
    ----------
    path : path-like
        The ``<name>_sr.tif`` to write.
    overwrite : bool
        Replace an existing file; otherwise an existing file raises MLSimError here, before
        the acquisition starts.
    """

    def __init__(self, path: str | os.PathLike[str], overwrite: bool = False) -> None:
        self.path = Path(path)
        check_outputs_free([self.path], overwrite)
        self.groups_written = 0
        self.groups_ignored = 0
        self._tif: Any = None
        self._closed = False

    def on_result(self, result: GroupResult) -> None:
        """Append one reconstruction and flush (ignored after :meth:`close`)."""
        import tifffile

        if self._closed:
            self.groups_ignored += 1
            log.warning(
                "group %s arrived after %s was closed; not written", result.key, self.path.name
            )
            return
        if self._tif is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._tif = tifffile.TiffWriter(self.path, bigtiff=True)
        meta = result_metadata(result)
        resolution = None
        if meta["pixel_size_um"]:
            per_cm = 1e4 / meta["pixel_size_um"]
            resolution = (per_cm, per_cm)
        self._tif.write(
            np.ascontiguousarray(result.sr, dtype=np.float32),
            description=json.dumps(meta, default=str),
            metadata=None,
            resolution=resolution,
            resolutionunit="CENTIMETER" if resolution else None,
            software=f"mlsim-live {__version__}",
            photometric="minisblack",
            contiguous=False,
        )
        self._tif.filehandle.flush()
        self.groups_written += 1

    def close(self) -> None:
        """Close the file; later results are ignored."""
        self._closed = True
        if self._tif is not None:
            self._tif.close()
            self._tif = None
            log.info("wrote %d reconstruction(s) to %s", self.groups_written, self.path)
