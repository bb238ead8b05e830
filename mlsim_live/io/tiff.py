"""Read raw SIM stacks from TIFF files lazily, and write reconstructions atomically.

Supported inputs: plain multi-page TIFF with 9*T frames (angle-major or phase-major), ImageJ
hyperstacks and OME-TIFF, whose angle/phase axes are read by name (``A``/``P``) or given by option
(e.g. channel ``C`` for angle and ``Z`` for phase). Frames are read group by group, so a file of
any size is streamed with flat memory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlsim_live.constants import ORDERS
from mlsim_live.errors import MLSimError, one_line
from mlsim_live.io.atomic import atomic_path
from mlsim_live.recon.base import GROUP_SIZE, N_ANGLES, N_PHASES
from mlsim_live.validation import check_frame_memory

if TYPE_CHECKING:  # pragma: no cover
    import tifffile

log = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff")
PIXEL_SIZE_RANGE_UM = (0.005, 2.0)  # as accepted by mlsim_live.sim.optics.Optics

_UNIT_TO_UM = {
    "um": 1.0,
    "µm": 1.0,
    "μm": 1.0,
    "\\u00b5m": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "mm": 1e3,
    "millimeter": 1e3,
    "cm": 1e4,
    "centimeter": 1e4,
    "m": 1e6,
    "meter": 1e6,
}
_RESUNIT_TO_UM = {3: 1e4, 4: 1e3, 5: 1.0}  # TIFF ResolutionUnit: centimetre, millimetre, micrometre


# --------------------------------------------------------------------------------------------
# tifffile access


def _tifffile() -> Any:
    import tifffile

    return tifffile


class _TifffileLog(logging.Handler):
    """Collects tifffile's log records while a file is parsed or read."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def errors(self) -> list[str]:
        return [one_line(r.getMessage()) for r in self.records if r.levelno >= logging.ERROR]

    def relog_warnings(self, path: Path) -> None:
        for r in self.records:
            if logging.WARNING <= r.levelno < logging.ERROR:
                log.warning("%s: %s", path, one_line(r.getMessage()))


_LOG_LOCK = threading.RLock()


@contextlib.contextmanager
def _capture_tifffile_log() -> Iterator[_TifffileLog]:
    """Route tifffile's log records into a collector instead of the console."""
    logger = logging.getLogger("tifffile")
    handler = _TifffileLog()
    with _LOG_LOCK:
        propagate = logger.propagate
        logger.addHandler(handler)
        logger.propagate = False
        try:
            yield handler
        finally:
            logger.removeHandler(handler)
            logger.propagate = propagate


# --------------------------------------------------------------------------------------------
# frame readers


class _ContiguousFrames:
    """Reads frames of an uncompressed, contiguous series with positional file reads.

    Positional reads (no memory map) keep the resident memory flat on files of any size.
    """

    def __init__(
        self, path: Path, offset: int, dtype: np.dtype, frame_shape: tuple[int, int]
    ) -> None:
        self._path = path
        self._offset = offset
        self._dtype = dtype
        self._frame_shape = frame_shape
        self._frame_bytes = int(np.prod(frame_shape)) * dtype.itemsize
        self._lock = threading.Lock()
        self._fh: Any = open(path, "rb")

    def read(self, frames: np.ndarray) -> np.ndarray:
        out = np.empty((len(frames), *self._frame_shape), dtype=self._dtype)
        flat = out.reshape(len(frames), -1)
        i = 0
        while i < len(frames):  # coalesce runs of consecutive frames into one read
            j = i + 1
            while j < len(frames) and frames[j] == frames[j - 1] + 1:
                j += 1
            view = memoryview(flat[i:j]).cast("B")
            with self._lock:
                self._fh.seek(self._offset + int(frames[i]) * self._frame_bytes)
                n = self._fh.readinto(view)
            if n != view.nbytes:
                raise MLSimError(
                    f"{self._path}: file is truncated at frame {int(frames[i])}; "
                    "expected complete image data"
                )
            i = j
        return out

    def close(self) -> None:
        self._fh.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


class _PageFrames:
    """Reads frames page by page through tifffile (compressed or scattered image data)."""

    def __init__(self, path: Path, tif: tifffile.TiffFile, series_index: int) -> None:
        self._path = path
        self._tif = tif
        self._series_index = series_index

    def read(self, frames: np.ndarray) -> np.ndarray:
        try:
            with _capture_tifffile_log() as tlog:
                data = self._tif.asarray(key=[int(f) for f in frames], series=self._series_index)
        except MLSimError:
            raise
        except Exception as exc:
            raise MLSimError(
                f"{self._path}: cannot read frames {_frame_list(frames)} "
                f"({type(exc).__name__}: {one_line(exc)}); expected a complete, readable TIFF"
            ) from exc
        errors = tlog.errors()
        if errors:
            raise MLSimError(
                f"{self._path}: corrupt image data in frames {_frame_list(frames)} "
                f"({errors[0]}); expected a complete, readable TIFF"
            )
        return np.asarray(data).reshape(len(frames), *data.shape[-2:])

    def close(self) -> None:
        self._tif.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def _frame_list(frames: np.ndarray) -> str:
    frames = [int(f) for f in frames]
    if frames == list(range(frames[0], frames[0] + len(frames))):
        return f"{frames[0]}-{frames[-1]}"
    return ",".join(map(str, frames))


class GroupArray:
    """Lazy, read-only ``(T, 9, H, W)`` view of the raw frames in a file, angle-major.

    Indexing reads only the frames asked for: ``groups[t]`` is one ``(9, H, W)`` group,
    ``groups[a:b]`` a ``(b - a, 9, H, W)`` array. ``np.asarray(groups)`` reads everything.
    """

    def __init__(
        self,
        reader: _ContiguousFrames | _PageFrames,
        frame_index: np.ndarray,
        frame_shape: tuple[int, int],
        dtype: np.dtype,
    ) -> None:
        self._reader = reader
        self._frame_index = frame_index  # (T, 9): file frame of each angle-major slot
        self.dtype = np.dtype(dtype).newbyteorder("=")
        self.shape = (frame_index.shape[0], GROUP_SIZE, *frame_shape)
        self.ndim = 4

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def frame_index(self) -> np.ndarray:
        """File frame number of each ``(group, angle-major slot)``, shape ``(T, 9)``."""
        return self._frame_index.copy()

    def __getitem__(self, key: Any) -> np.ndarray:
        rest: tuple[Any, ...] = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, (int, np.integer)):
            t = int(key)
            if t < 0:
                t += len(self)
            if not 0 <= t < len(self):
                raise IndexError(f"group {key} out of range for {len(self)} groups")
            out = self._read(self._frame_index[t])
        else:
            ts = range(len(self))[key]
            out = np.empty((len(ts), *self.shape[1:]), self.dtype)
            for i, t in enumerate(ts):
                out[i] = self._read(self._frame_index[t])
        return out[rest] if rest else out

    def _read(self, frames: np.ndarray) -> np.ndarray:
        return self._reader.read(frames).astype(self.dtype, copy=False)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"GroupArray(shape={self.shape}, dtype={self.dtype})"

    def close(self) -> None:
        """Release the file."""
        self._reader.close()


# --------------------------------------------------------------------------------------------
# RawStack


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
        named or chosen angle/phase axes).
    axes : str
        The file's axes of length > 1 (tifffile codes, e.g. ``"TZCYX"``).
    order : str
        ``"angle-major"``, ``"phase-major"`` (plain layout) or ``"axes"``.
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
        Without them, axes named ``A`` and ``P`` are used; all other axes of length > 1 are
        flattened, in file order, into the group (time) axis.

    Returns
    -------
    RawStack
        Call `RawStack.close` (or use it as a context manager) when done.

    Raises
    ------
    MLSimError
        One line naming the file, what was found and what is expected: missing file, not a TIFF,
        empty or truncated file, unsupported pixel type, a single 2D image, a frame count that
        is not a multiple of 9, or 4D/5D data whose axes do not say which is angle and phase.
    """
    path = Path(path)
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

    tifffile = _tifffile()
    tif = None
    try:
        with _capture_tifffile_log() as tlog:
            try:
                tif = tifffile.TiffFile(path)
                series_list = list(tif.series)
                series = series_list[0] if series_list else None
                if series is not None:
                    full_shape = tuple(int(s) for s in series.get_shape(False))
                    full_axes = str(series.get_axes(False))
                    dataoffset = series.dataoffset
                    keyframe = series.keyframe
                    fmt = _format_of(tif)
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
        if series is None or not tif.pages or len(full_shape) < 2 or int(np.prod(full_shape)) == 0:
            raise MLSimError(f"{path}: TIFF contains no images; expected 9*T raw frames")
        tlog.relog_warnings(path)
        if len(series_list) > 1:
            log.warning("%s: %d image series; reading the first", path, len(series_list))

        dtype = np.dtype(series.dtype)
        if dtype.kind not in "iuf":
            raise MLSimError(
                f"{path}: pixel type {dtype.name} is not supported; "
                "expected integer or float frames"
            )
        frame_index, frame_shape, layout, used_order = _frame_index(
            path, full_shape, full_axes, order, angle_axis, phase_axis
        )
        check_frame_memory(frame_shape, dtype.itemsize, str(path))  # before any allocation
        with _capture_tifffile_log() as tlog:  # page offsets may be read only now
            pixel_size_um, na, wavelength_nm = _physical_metadata(path, tif, fmt)
            reader = _make_reader(
                path, tif, series, dataoffset, keyframe, full_shape, frame_shape, dtype
            )
        errors = tlog.errors()
        if errors:
            reader.close()
            raise MLSimError(
                f"{path}: TIFF is truncated or corrupt ({errors[0]}); expected a complete TIFF"
            )
        tlog.relog_warnings(path)
        if isinstance(reader, _ContiguousFrames):
            tif.close()
    except BaseException:
        if tif is not None:
            tif.close()
        raise

    groups = GroupArray(reader, frame_index, frame_shape, dtype)
    return RawStack(
        path=path,
        groups=groups,
        dtype=groups.dtype,
        pixel_size_um=pixel_size_um,
        layout=layout,
        axes=_squeezed_axes(full_axes, full_shape),
        order=used_order,
        format=fmt,
        na=na,
        wavelength_nm=wavelength_nm,
    )


def _squeezed_axes(axes: str, shape: tuple[int, ...]) -> str:
    """Axes of length > 1, and always Y and X."""
    return "".join(a for a, n in zip(axes, shape) if n > 1 or a in "YX")


def _format_of(tif: tifffile.TiffFile) -> str:
    if tif.is_ome:
        return "ome"
    if tif.is_imagej:
        return "imagej"
    if tif.is_shaped:
        return "shaped"
    return "tiff"


def _make_reader(
    path: Path,
    tif: tifffile.TiffFile,
    series: Any,
    dataoffset: int | None,
    keyframe: Any,
    full_shape: tuple[int, ...],
    frame_shape: tuple[int, int],
    dtype: np.dtype,
) -> _ContiguousFrames | _PageFrames:
    """Positional reads for contiguous uncompressed data, else tifffile page reads."""
    file_size = path.stat().st_size
    contiguous = (
        dataoffset is not None
        and int(keyframe.compression) == 1
        and int(getattr(keyframe, "predictor", 1)) == 1
        and int(getattr(keyframe, "fillorder", 1)) == 1
        and keyframe.bitspersample == dtype.itemsize * 8
    )
    if contiguous:
        nbytes = int(np.prod(full_shape)) * dtype.itemsize
        if dataoffset + nbytes > file_size:
            n_frames = int(np.prod(full_shape)) // int(np.prod(frame_shape))
            frame_bytes = int(np.prod(frame_shape)) * dtype.itemsize
            complete = max(0, (file_size - dataoffset) // frame_bytes)
            raise MLSimError(
                f"{path}: TIFF is truncated: {file_size} bytes hold {complete} of {n_frames} "
                "frames; expected a complete file"
            )
        file_dtype = dtype.newbyteorder(tif.byteorder)
        return _ContiguousFrames(path, int(dataoffset), file_dtype, frame_shape)
    # Page by page: check that every page's data lies inside the file.
    for i, page in enumerate(series.pages):
        if page is None:
            raise MLSimError(f"{path}: frame {i} is missing; expected a complete TIFF")
        offsets = getattr(page, "dataoffsets", ())
        counts = getattr(page, "databytecounts", ())
        if any(o + c > file_size for o, c in zip(offsets, counts)):
            raise MLSimError(
                f"{path}: TIFF is truncated: frame {i} ends beyond the end of the file; "
                "expected a complete file"
            )
    return _PageFrames(path, tif, 0)


def _frame_index(
    path: Path,
    full_shape: tuple[int, ...],
    full_axes: str,
    order: str,
    angle_axis: str | None,
    phase_axis: str | None,
) -> tuple[np.ndarray, tuple[int, int], str, str]:
    """Map each (group, angle-major slot) to a flat frame number of the file."""
    if not (full_axes.endswith("YX") or full_axes.endswith("YXS")):
        raise MLSimError(
            f"{path}: axes {full_axes} with shape {full_shape}; expected frames ending in Y, X"
        )
    y = full_axes.index("Y")
    frame_shape = (full_shape[y], full_shape[y + 1])
    if full_axes.endswith("YXS") and full_shape[-1] > 1:
        raise MLSimError(
            f"{path}: {full_shape[-1]} samples per pixel (RGB, axes {full_axes}); "
            "expected single-channel grayscale frames"
        )
    # non-spatial axes (those before Y); singleton S after X is part of the frame
    lead_axes = full_axes[:y]
    lead_shape = full_shape[:y]
    n_frames = int(np.prod(lead_shape)) if lead_shape else 1
    big = [(i, a, n) for i, (a, n) in enumerate(zip(lead_axes, lead_shape)) if n > 1]
    shape_text = "x".join(map(str, full_shape))

    def named(letter: str | None) -> int | None:
        if letter is None:
            return None
        letter = letter.upper()
        hits = [i for i, a in enumerate(lead_axes) if a == letter]
        if len(hits) != 1:
            raise MLSimError(
                f"{path}: axis {letter} {'is absent' if not hits else 'is ambiguous'} in axes "
                f"{full_axes} (shape {shape_text}); expected one of the axes {lead_axes or '-'}"
            )
        return hits[0]

    a_dim = named(angle_axis)
    p_dim = named(phase_axis)
    if a_dim is None and "A" in lead_axes and "P" in lead_axes:
        a_dim, p_dim = named("A"), named("P")

    if a_dim is not None and p_dim is not None:
        if a_dim == p_dim:
            raise MLSimError(
                f"{path}: angle and phase axis are both {lead_axes[a_dim]}; "
                "expected two different axes"
            )
        for dim, what, n_expected in ((a_dim, "angle", N_ANGLES), (p_dim, "phase", N_PHASES)):
            if lead_shape[dim] != n_expected:
                raise MLSimError(
                    f"{path}: {what} axis {lead_axes[dim]} has {lead_shape[dim]} entries "
                    f"(axes {full_axes}, shape {shape_text}); expected {n_expected}"
                )
        other = [i for i in range(len(lead_axes)) if i not in (a_dim, p_dim)]
        n_groups = int(np.prod([lead_shape[i] for i in other])) if other else 1
        index = np.zeros((n_groups, GROUP_SIZE), dtype=np.int64)
        other_idx = (
            np.unravel_index(np.arange(n_groups), [lead_shape[i] for i in other]) if other else ()
        )
        for a in range(N_ANGLES):
            for p in range(N_PHASES):
                multi: list[Any] = [None] * len(lead_axes)
                multi[a_dim] = np.full(n_groups, a)
                multi[p_dim] = np.full(n_groups, p)
                for k, i in enumerate(other):
                    multi[i] = other_idx[k]
                index[:, a * N_PHASES + p] = np.ravel_multi_index(multi, lead_shape)
        _check_no_planar_samples(path, lead_axes, lead_shape)
        return index, frame_shape, "axes", "axes"

    if not big:
        raise MLSimError(
            f"{path}: found a single 2D image of {frame_shape[0]}x{frame_shape[1]}; "
            f"expected a stack of 9*T frames ({N_ANGLES} angles x {N_PHASES} phases per group)"
        )
    if len(big) > 1:
        big_axes = "".join(a for _, a, _ in big)
        big_shape = "x".join(str(n) for _, _, n in big)
        raise MLSimError(
            f"{path}: found {len(big) + 2}D data of shape {big_shape}x{frame_shape[0]}x"
            f"{frame_shape[1]} with axes {big_axes}YX that do not say which is angle and which "
            "is phase; expected a plain stack of 9*T frames, axes named A and P, or "
            f"--angle-axis/--phase-axis naming two of {big_axes}"
        )
    if n_frames % GROUP_SIZE:
        raise MLSimError(
            f"{path}: found {n_frames} frames of {frame_shape[0]}x{frame_shape[1]}; expected a "
            f"multiple of {GROUP_SIZE} ({N_ANGLES} angles x {N_PHASES} phases per group)"
        )
    _check_no_planar_samples(path, lead_axes, lead_shape)
    n_groups = n_frames // GROUP_SIZE
    slots = np.arange(GROUP_SIZE)
    if order == "angle-major":
        within = slots
    else:  # phase-major file order p0a0 p0a1 p0a2 p1a0 ...: slot a*3+p is at file p*3+a
        within = (slots % N_PHASES) * N_ANGLES + slots // N_PHASES
    index = np.arange(n_groups)[:, None] * GROUP_SIZE + within[None, :]
    return index.astype(np.int64), frame_shape, "plain", order


def _check_no_planar_samples(path: Path, lead_axes: str, lead_shape: tuple[int, ...]) -> None:
    """Planar RGB-like samples (an ``S`` axis before Y) are not SIM frames."""
    if "S" in lead_axes and lead_shape[lead_axes.index("S")] > 1:
        raise MLSimError(
            f"{path}: {lead_shape[lead_axes.index('S')]} planar samples per pixel (RGB-like, "
            f"axes {lead_axes}YX); expected single-channel grayscale frames"
        )


# --------------------------------------------------------------------------------------------
# physical metadata


def _physical_metadata(
    path: Path, tif: tifffile.TiffFile, fmt: str
) -> tuple[float | None, float | None, float | None]:
    """Pixel size (um), NA and emission wavelength (nm) from the file's metadata, if any."""
    pixel = na = wavelength = None
    try:
        if fmt == "ome":
            pixel, na, wavelength = _ome_metadata(tif.ome_metadata or "")
        if pixel is None and fmt == "imagej":
            pixel = _imagej_pixel_um(tif)
        if pixel is None and fmt == "shaped":
            meta = (tif.shaped_metadata or ({},))[0]
            value = meta.get("pixel_size_um") if isinstance(meta, dict) else None
            pixel = float(value) if value is not None else None
        if pixel is None:
            pixel = _resolution_pixel_um(tif)
    except Exception as exc:  # metadata oddities are recoverable
        log.warning("%s: cannot read the pixel size from metadata (%s)", path, one_line(exc))
        pixel = None
    if pixel is not None and not (
        math.isfinite(pixel) and PIXEL_SIZE_RANGE_UM[0] <= pixel <= PIXEL_SIZE_RANGE_UM[1]
    ):
        log.warning(
            "%s: ignoring metadata pixel size %g um (expected %g to %g um)",
            path,
            pixel,
            *PIXEL_SIZE_RANGE_UM,
        )
        pixel = None
    return pixel, na, wavelength


def _xresolution(tif: tifffile.TiffFile) -> float | None:
    tag = tif.pages.first.tags.get("XResolution")
    if tag is None:
        return None
    num, den = tag.value
    if not num or not den:
        return None
    return num / den


def _imagej_pixel_um(tif: tifffile.TiffFile) -> float | None:
    meta = tif.imagej_metadata or {}
    unit = str(meta.get("unit", "")).strip().lower()
    factor = _UNIT_TO_UM.get(unit)
    xres = _xresolution(tif)
    if factor is None or not xres:
        return None
    return factor / xres


def _resolution_pixel_um(tif: tifffile.TiffFile) -> float | None:
    unit_tag = tif.pages.first.tags.get("ResolutionUnit")
    factor = _RESUNIT_TO_UM.get(int(unit_tag.value) if unit_tag is not None else 2)
    xres = _xresolution(tif)
    if factor is None or not xres:
        return None
    return factor / xres


def _ome_metadata(xml: str) -> tuple[float | None, float | None, float | None]:
    if not xml:
        return None, None, None
    root = ET.fromstring(xml)

    def find(tag: str) -> ET.Element | None:
        return next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == tag), None)

    pixel = na = wavelength = None
    pixels = find("Pixels")
    if pixels is not None and pixels.get("PhysicalSizeX"):
        unit = pixels.get("PhysicalSizeXUnit", "µm").strip().lower()
        factor = _UNIT_TO_UM.get(unit)
        if factor is not None:
            pixel = float(pixels.get("PhysicalSizeX")) * factor
    objective = find("Objective")
    if objective is not None and objective.get("LensNA"):
        na = float(objective.get("LensNA"))
    channel = find("Channel")
    if channel is not None and channel.get("EmissionWavelength"):
        unit = channel.get("EmissionWavelengthUnit", "nm").strip().lower()
        factor = _UNIT_TO_UM.get(unit)
        if factor is not None:
            wavelength = float(channel.get("EmissionWavelength")) * factor * 1e3
    return pixel, na, wavelength


# --------------------------------------------------------------------------------------------
# writing


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
    """Return the JSON extras and pixel size that `write_tiff_atomic` stored in ``path``."""
    tifffile = _tifffile()
    with tifffile.TiffFile(path) as tif:
        meta = tif.imagej_metadata or {}
        info = meta.get("Info")
        extras = json.loads(info) if info else {}
        return {"pixel_size_um": _imagej_pixel_um(tif), "metadata": extras}


def find_tiffs(folder: Path) -> list[Path]:
    """All ``*.tif``/``*.tiff`` files under ``folder`` (recursive, sorted, hidden files skipped)."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith(TIFF_SUFFIXES):
                found.append(Path(root) / name)
    return found


def output_stem(path: Path) -> str:
    """File name without ``.tif``/``.tiff`` and a trailing ``.ome``."""
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem
