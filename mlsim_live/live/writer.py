"""Live outputs: reconstructions appended to ``<name>_sr.tif`` as they arrive, and the summary JSON.

The SR file is a BigTIFF with one page per group (so ``tifffile.imread`` gives a T x 2H x 2W
stack). Each page carries the group's metadata as JSON in its ImageDescription and the SR pixel
size (the raw pixel size divided by the reconstructor's scale) in its resolution tags. It is
written unbuffered, so it is a valid TIFF at any time and a crash loses at most the group in
flight; a write that fails (a full disk) is undone, so the pages before it stay readable.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mlsim_live import __version__
from mlsim_live.errors import MLSimError, one_line
from mlsim_live.io import write_json_atomic
from mlsim_live.io.atomic import check_writable
from mlsim_live.live.results import GroupResult

log = logging.getLogger(__name__)

SR_SUFFIX = "_sr.tif"
SUMMARY_SUFFIX = "_summary.json"


def open_sr_file(path: Path) -> Any:
    """Open a new SR file for unbuffered binary writing (each write reaches the OS at once)."""
    return open(path, "w+b", buffering=0)


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
        self.failure: BaseException | None = None
        self._tif: Any = None
        self._file: Any = None
        self._closed = False

    def on_result(self, result: GroupResult) -> None:
        """Append one reconstruction (ignored after :meth:`close`).

        Raises
        ------
        OSError
            When the page cannot be written (e.g. the disk is full): the partial page is
            undone, the file closed with the pages before it, and the writer takes no more.
        """
        import tifffile

        if self._closed:
            self.groups_ignored += 1
            log.warning(
                "group %s arrived after %s was closed; not written", result.key, self.path.name
            )
            return
        if self.failure is not None:
            raise MLSimError(f"{self.path}: not written after an earlier failure ({self.failure})")
        if self._tif is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open_sr_file(self.path)
            try:
                self._tif = tifffile.TiffWriter(self._file, bigtiff=True)
            except BaseException as exc:
                self._fail(exc, None, 0)
                raise
        meta = result_metadata(result)
        resolution = None
        if meta["pixel_size_um"]:
            per_cm = 1e4 / meta["pixel_size_um"]
            resolution = (per_cm, per_cm)
        size_before = self._file.seek(0, os.SEEK_END)
        pointer_at = self._tif._ifdoffset  # where the last page points to the next one
        try:
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
        except BaseException as exc:
            self._fail(exc, pointer_at, size_before)
            raise
        self.groups_written += 1

    @property
    def failure_reason(self) -> str | None:
        """Why writing stopped, in a few words (e.g. ``no space left on device``), or None."""
        exc = self.failure
        if exc is None:
            return None
        if isinstance(exc, OSError) and exc.strerror:
            return exc.strerror.lower()
        return f"{type(exc).__name__}: {one_line(exc)}"

    def _fail(self, exc: BaseException, pointer_at: int | None, size_before: int) -> None:
        """Undo a partial page and close the file with the pages before it (none: remove it)."""
        self.failure = exc
        tif, file = self._tif, self._file
        self._tif = self._file = None
        with contextlib.suppress(Exception):
            if pointer_at is not None:
                os.pwrite(file.fileno(), struct.pack("<Q", 0), pointer_at)  # in place: no space
            os.ftruncate(file.fileno(), size_before)
        with contextlib.suppress(Exception):
            if tif is not None:
                tif._fh = None  # closing tifffile's writer would write again
        with contextlib.suppress(Exception):
            file.close()
        if self.groups_written == 0:
            with contextlib.suppress(OSError):
                self.path.unlink()
        else:
            log.info(
                "%s keeps the %d group(s) written before the failure",
                self.path,
                self.groups_written,
            )

    def close(self) -> None:
        """Close the file; later results are ignored."""
        self._closed = True
        if self._tif is not None:
            try:
                self._tif.close()
            finally:
                self._tif = None
                if self._file is not None:
                    self._file.close()
                    self._file = None
            log.info("wrote %d reconstruction(s) to %s", self.groups_written, self.path)
