"""Open a raw SIM stack lazily: `read_raw_stack` gives a `RawStack` of T groups of 9 frames.

Supported inputs: plain multi-page TIFF with 9*T frames (angle-major or phase-major), ImageJ
hyperstacks and OME-TIFF, whose angle/phase axes are read by name (``A``/``P``) or given by option
(e.g. channel ``C`` for angle and ``Z`` for phase), and OME-TIFF whose 9 channels are named by
the SIM patterns ``A0P0`` .. ``A2P2`` (pymmcore-plus's writer, any channel order). Frames are
read group by group, so a file of any size is streamed with flat memory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlsim_live.constants import ORDERS
from mlsim_live.errors import MLSimError, one_line
from mlsim_live.io.ome_channels import _channel_slots, _ome_channel_names
from mlsim_live.io.tiff_frames import GroupArray, _ContiguousFrames, _make_reader, _PageFrames
from mlsim_live.io.tiff_layout import _frame_index, _squeezed_axes
from mlsim_live.io.tiff_metadata import _format_of, _physical_metadata
from mlsim_live.io.tifffile_log import _capture_tifffile_log, _tifffile
from mlsim_live.validation import check_frame_memory

if TYPE_CHECKING:  # pragma: no cover
    import tifffile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawStack:
    """Raw SIM frames of one file, as T groups of 9 angle-major frames.

    Attributes
    ----------
    path : Path
        The source file.
    groups : GroupArray
        Lazy array of shape ``(T, 9, H, W)``; indexing reads from the file.
    dtype : numpy.dtype
        Pixel type of the raw frames (native byte order).
    pixel_size_um : float or None
        Camera pixel size in the sample plane, from the file's metadata, when present.
    layout : str
        How the frames were found: ``"plain"`` (a sequence of 9*T frames), ``"axes"`` (by
        named or chosen angle/phase axes), ``"channels"`` (OME channels named ``A<a>P<p>``).
    axes : str
        The file's axes of length > 1 (tifffile codes, e.g. ``"TZCYX"``).
    order : str
        ``"angle-major"``, ``"phase-major"`` (plain layout), ``"axes"`` or ``"channels"``.
    format : str
        ``"imagej"``, ``"ome"``, ``"shaped"`` or ``"tiff"``.
    na : float or None
        Objective NA from OME metadata, when present.
    wavelength_nm : float or None
        Emission wavelength from OME metadata, when present.
    """

    path: Path
    groups: GroupArray
    dtype: np.dtype
    pixel_size_um: float | None = None
    layout: str = "plain"
    axes: str = ""
    order: str = "angle-major"
    format: str = "tiff"
    na: float | None = None
    wavelength_nm: float | None = None

    @property
    def n_groups(self) -> int:
        """Number of 9-frame groups T."""
        return self.groups.shape[0]

    @property
    def frame_shape(self) -> tuple[int, int]:
        """``(H, W)`` of the raw frames."""
        return self.groups.shape[2], self.groups.shape[3]

    def group(self, t: int) -> np.ndarray:
        """Read group ``t`` as a ``(9, H, W)`` array, checked for NaN/Inf and constant frames.

        Raises
        ------
        MLSimError
            If the frames cannot be read or hold no usable signal.
        """
        group = self.groups[t]
        check_group(group, self.path, t)
        return group

    def close(self) -> None:
        """Release the file."""
        self.groups.close()

    def __enter__(self) -> RawStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_group(group: np.ndarray, path: Path | str, t: int) -> None:
    """Raise `MLSimError` when a ``(9, H, W)`` group breaks `mlsim_live.validation`'s rule."""
    from mlsim_live.validation import group_problem

    problem = group_problem(group)
    if problem is not None:
        raise MLSimError(f"{path}: group {t} {problem}")


def iter_groups(
    stack: RawStack, start: int = 0, stop: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(t, group)`` for groups ``start <= t < stop``, reading one group at a time.

    Each group is a checked ``(9, H, W)`` array in the file's dtype (see `RawStack.group`).
    """
    stop = stack.n_groups if stop is None else min(stop, stack.n_groups)
    for t in range(start, stop):
        yield t, stack.group(t)


def read_raw_stack(
    path: str | os.PathLike[str],
    order: str = "angle-major",
    *,
    angle_axis: str | None = None,
    phase_axis: str | None = None,
) -> RawStack:
    """Open a raw SIM stack without loading its frames.

    Parameters
    ----------
    path : path-like
        A TIFF file (plain multi-page, ImageJ hyperstack or OME-TIFF).
    order : {"angle-major", "phase-major"}
        Frame order of a plain sequence of 9*T frames: ``a0p0 a0p1 a0p2 a1p0 ...`` or
        ``p0a0 p0a1 p0a2 p1a0 ...``. Ignored when the file's axes name angle and phase.
    angle_axis, phase_axis : str, optional
        Axis letters (tifffile codes: ``C`` channel, ``Z`` depth, ``T`` time, ``A`` angle,
        ``P`` phase, ...) that hold the 3 pattern angles and 3 phases. Give both or neither.
        Without them, axes named ``A`` and ``P`` are used, else the 9 channels of an OME-TIFF
        named ``A0P0`` .. ``A2P2`` (any order); all other axes of length > 1 are flattened, in
        file order, into the group (time) axis.

    Returns
    -------
    RawStack
        Call `RawStack.close` (or use it as a context manager) when done.

    Raises
    ------
    MLSimError
        One line naming the file, what was found and what is expected: missing file, not a TIFF,
        empty or truncated file, unsupported pixel type, a single 2D image, a frame count that
        is not a multiple of 9, 4D/5D data whose axes do not say which is angle and phase, or
        OME channel names ``A<a>P<p>`` that are not the complete set ``A0P0`` .. ``A2P2``.
    """
    path = Path(path)
    _check_request(path, order, angle_axis, phase_axis)
    tif, found = _open_series(path)
    try:
        dtype = _pixel_type(path, found.series)
        frame_index, frame_shape, layout, used_order = _frame_index(
            path,
            found.full_shape,
            found.full_axes,
            order,
            angle_axis,
            phase_axis,
            _pattern_channels(path, tif, found, angle_axis),
        )
        check_frame_memory(frame_shape, dtype.itemsize, str(path))  # before any allocation
        reader, (pixel_size_um, na, wavelength_nm) = _open_reader(
            path, tif, found, frame_shape, dtype
        )
        if isinstance(reader, _ContiguousFrames):
            tif.close()
    except BaseException:
        tif.close()
        raise

    groups = GroupArray(reader, frame_index, frame_shape, dtype)
    return RawStack(
        path=path,
        groups=groups,
        dtype=groups.dtype,
        pixel_size_um=pixel_size_um,
        layout=layout,
        axes=_squeezed_axes(found.full_axes, found.full_shape),
        order=used_order,
        format=found.fmt,
        na=na,
        wavelength_nm=wavelength_nm,
    )


def _check_request(path: Path, order: str, angle_axis: str | None, phase_axis: str | None) -> None:
    """Refuse an unknown order, a lone angle or phase axis, and a missing file or a folder."""
    if order not in ORDERS:
        raise MLSimError(f"order {order!r} is unknown; expected one of {', '.join(ORDERS)}")
    if (angle_axis is None) != (phase_axis is None):
        raise MLSimError(
            f"{path}: angle axis {angle_axis!r}, phase axis {phase_axis!r}; "
            "expected both axes or neither"
        )
    if not path.exists():
        raise MLSimError(f"{path}: no such file; expected an existing TIFF file")
    if path.is_dir():
        raise MLSimError(f"{path}: is a folder; expected a TIFF file")


@dataclass(frozen=True)
class _Series:
    """The first image series of an open TIFF file, as tifffile parsed it."""

    series: Any
    full_shape: tuple[int, ...]
    full_axes: str
    dataoffset: int | None
    keyframe: Any
    fmt: str


def _open_series(path: Path) -> tuple[tifffile.TiffFile, _Series]:
    """Open ``path`` and parse its first image series; the file is closed again on any error."""
    tif = None
    try:
        with _capture_tifffile_log() as tlog:
            try:
                tif = _tifffile().TiffFile(path)
                series_list = list(tif.series)
                found = _parse_series(tif, series_list[0]) if series_list else None
            except MLSimError:
                raise
            except Exception as exc:
                raise MLSimError(
                    f"{path}: not a readable TIFF ({type(exc).__name__}: {one_line(exc)}); "
                    "expected a TIFF file"
                ) from exc
        errors = tlog.errors()
        if errors:
            raise MLSimError(
                f"{path}: TIFF is truncated or corrupt ({errors[0]}); expected a complete TIFF"
            )
        if (
            found is None
            or not tif.pages
            or len(found.full_shape) < 2
            or int(np.prod(found.full_shape)) == 0
        ):
            raise MLSimError(f"{path}: TIFF contains no images; expected 9*T raw frames")
        tlog.relog_warnings(path)
        if len(series_list) > 1:
            log.warning("%s: %d image series; reading the first", path, len(series_list))
        return tif, found
    except BaseException:
        if tif is not None:
            tif.close()
        raise


def _parse_series(tif: tifffile.TiffFile, series: Any) -> _Series:
    return _Series(
        series=series,
        full_shape=tuple(int(s) for s in series.get_shape(False)),
        full_axes=str(series.get_axes(False)),
        dataoffset=series.dataoffset,
        keyframe=series.keyframe,
        fmt=_format_of(tif),
    )


def _pattern_channels(
    path: Path, tif: tifffile.TiffFile, found: _Series, angle_axis: str | None
) -> tuple[int, ...] | None:
    """Angle-major slot of each OME channel named ``A<a>P<p>`` (None when not such a file)."""
    if found.fmt != "ome" or angle_axis is not None:
        return None
    try:
        names = _ome_channel_names(tif.ome_metadata or "")
    except Exception as exc:  # unreadable OME XML: the axes decide, as for any TIFF
        log.warning("%s: cannot read the OME channel names (%s)", path, one_line(exc))
        return None
    return _channel_slots(path, names)


def _pixel_type(path: Path, series: Any) -> np.dtype:
    dtype = np.dtype(series.dtype)
    if dtype.kind not in "iuf":
        raise MLSimError(
            f"{path}: pixel type {dtype.name} is not supported; expected integer or float frames"
        )
    return dtype


def _open_reader(
    path: Path,
    tif: tifffile.TiffFile,
    found: _Series,
    frame_shape: tuple[int, int],
    dtype: np.dtype,
) -> tuple[_ContiguousFrames | _PageFrames, tuple[float | None, float | None, float | None]]:
    """The frame reader and the physical metadata (pixel size um, NA, wavelength nm)."""
    with _capture_tifffile_log() as tlog:  # page offsets may be read only now
        physical = _physical_metadata(path, tif, found.fmt)
        reader = _make_reader(
            path,
            tif,
            found.series,
            found.dataoffset,
            found.keyframe,
            found.full_shape,
            frame_shape,
            dtype,
        )
    errors = tlog.errors()
    if errors:
        reader.close()
        raise MLSimError(
            f"{path}: TIFF is truncated or corrupt ({errors[0]}); expected a complete TIFF"
        )
    tlog.relog_warnings(path)
    return reader, physical
