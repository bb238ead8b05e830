"""Frame sources for replay: recorded raw SIM data (TIFF, NDTiff) streamed frame by frame,
yielded as ``(frame, axes, metadata)`` exactly as an acquisition hands frames to the pipeline.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mlsim_live.errors import MLSimError, one_line
from mlsim_live.recon.base import GROUP_SIZE, N_ANGLES, N_PHASES
from mlsim_live.validation import check_frame_memory

log = logging.getLogger(__name__)

__all__ = [
    "NDTIFF_INDEX",
    "Frame",
    "FrameSource",
    "NDTiffSource",
    "TiffSource",
    "describe",
    "is_ndtiff",
    "open_source",
]

Frame = tuple[np.ndarray, dict[str, Any], dict[str, Any]]

NDTIFF_INDEX = "NDTiff.index"
TIFF_SUFFIXES = (".tif", ".tiff")
# Per-frame metadata keys written by Micro-Manager and by the demo's simulated optics.
PIXEL_SIZE_KEY = "PixelSize_um"
SIMULATED_KEY = "mlsim-live-Simulated"  # mlsim_live.live.sim_optics.SIMULATED_TAG
NA_KEY = "mlsim-live-NA"  # mlsim_live.live.sim_optics.NA_TAG
WAVELENGTH_KEY = "mlsim-live-EmissionWavelength_nm"  # mlsim_live.live.sim_optics.WAVELENGTH_TAG

# NDTiff pixel types (ndtiff.ndtiff_index.NDTiffIndexEntry): bytes per pixel, monochrome only.
_NDTIFF_BYTES = {0: 1, 1: 2, 3: 2, 4: 2, 5: 2, 6: 2}
_NDTIFF_RGB = 2


@runtime_checkable
class FrameSource(Protocol):
    """Recorded raw frames, in acquisition order, as the live pipeline receives them.

    Attributes
    ----------
    name : str
        Output stem: ``<name>_sr.tif`` and ``<name>_summary.json``.
    path : Path
        What was opened.
    format : str
        What kind of recording it is (``"ndtiff"``, ``"tiff"``, ``"imagej"``, ``"ome"``, ...).
    n_frames : int
        Raw frames the source will yield.
    frame_shape : (int, int)
        ``(H, W)`` of the raw frames.
    dtype : numpy.dtype
        Pixel type of the raw frames.
    pixel_size_um : float or None
        Raw camera pixel size in the sample plane, when the recording says.
    simulated : bool
        The frames came from simulated optics (a ``demo`` recording).

    A source may also have ``na`` and ``wavelength_nm`` (float or None): the objective NA and
    emission wavelength, when the recording says. Replay uses them unless options override.
    """

    name: str
    path: Path
    format: str
    n_frames: int
    frame_shape: tuple[int, int]
    dtype: np.dtype
    pixel_size_um: float | None
    simulated: bool

    def __iter__(self) -> Iterator[Frame]:
        """Yield ``(frame, axes, metadata)`` for each raw frame, reading as it goes.

        Raises
        ------
        MLSimError
            When a frame cannot be read (corrupt or truncated data).
        """
        ...

    def close(self) -> None:
        """Release the files."""
        ...


# --------------------------------------------------------------------------------------------
# TIFF


class TiffSource:
    """Frames of a TIFF raw stack: plain multi-page, ImageJ hyperstack or OME-TIFF.

    Reads through `mlsim_live.io.read_raw_stack` (positional reads, one group at a time) and
    yields each group's 9 frames in file order with axes ``{"time": t, "angle": a,
    "phase": p}``; ``t`` counts the groups (all axes other than angle and phase, flattened in
    file order).

    Parameters
    ----------
    path : path-like
        The TIFF file.
    order : {"angle-major", "phase-major"}
        Frame order of a plain stack (ignored when the file's axes name angle and phase).
    angle_axis, phase_axis : str, optional
        TIFF axis letters standing for angle and phase (e.g. ``C`` and ``Z``); both or neither.
    pixel_size_um : float, optional
        Overrides the file's pixel size.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        order: str = "angle-major",
        angle_axis: str | None = None,
        phase_axis: str | None = None,
        pixel_size_um: float | None = None,
    ) -> None:
        from mlsim_live.io import output_stem, read_raw_stack

        self.path = Path(path)
        self.stack = read_raw_stack(
            self.path, order=order, angle_axis=angle_axis, phase_axis=phase_axis
        )
        self.name = output_stem(self.path)
        self.format = self.stack.format
        self.n_groups = self.stack.n_groups
        self.n_frames = self.n_groups * GROUP_SIZE
        self.frame_shape = self.stack.frame_shape
        self.dtype = np.dtype(self.stack.dtype)
        self.pixel_size_um = (
            pixel_size_um if pixel_size_um is not None else self.stack.pixel_size_um
        )
        self.simulated = False
        self.na = self.stack.na
        self.wavelength_nm = self.stack.wavelength_nm
        self._frame_index = self.stack.groups.frame_index  # (T, 9) file frame per slot

    def __iter__(self) -> Iterator[Frame]:
        for t in range(self.n_groups):
            group = self.stack.groups[t]  # (9, H, W) angle-major; MLSimError when unreadable
            file_frames = self._frame_index[t]
            for slot in np.argsort(file_frames, kind="stable"):
                angle, phase = divmod(int(slot), N_PHASES)
                axes = {"time": t, "angle": angle, "phase": phase}
                yield group[slot], axes, {"frame_index": int(file_frames[slot])}

    def close(self) -> None:
        """Release the file."""
        self.stack.close()

    def __enter__(self) -> TiffSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"TiffSource({str(self.path)!r}, format={self.format!r}, groups={self.n_groups}, "
            f"frame_shape={self.frame_shape}, dtype={self.dtype})"
        )


# --------------------------------------------------------------------------------------------
# NDTiff


class NDTiffSource:
    """Frames of a Pycro-Manager NDTiff dataset (the raw output of ``demo`` and ``live``).

    Frames are read one at a time in the order they were written, with their axes as recorded
    (``time``, ``angle``, ``phase``, ``position``, ...) and their image metadata. The pixel
    size comes from the image metadata (Micro-Manager's ``PixelSize_um``), else from the
    summary metadata; so do the NA and emission wavelength (``na``, ``wavelength_nm``) where
    the recording has them (the demo tags its simulated optics), else they are None.

    Parameters
    ----------
    path : path-like
        The dataset folder (the one holding ``NDTiff.index``).
    angle_axis, phase_axis : str
        Names of the recorded axes that hold the 3 angles and 3 phases (default ``angle`` and
        ``phase``; e.g. ``channel`` and ``z``). They are yielded as ``angle`` and ``phase``,
        indices 0..2 (values are taken in sorted order when they are not 0, 1, 2).
    pixel_size_um : float, optional
        Overrides the recorded pixel size.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        angle_axis: str | None = None,
        phase_axis: str | None = None,
        pixel_size_um: float | None = None,
    ) -> None:
        self.path = Path(path)
        self.name = self.path.name
        self.format = "ndtiff"
        self.angle_axis = angle_axis or "angle"
        self.phase_axis = phase_axis or "phase"
        if self.angle_axis == self.phase_axis:
            raise MLSimError(
                f"angle and phase axes are both {self.angle_axis!r}; expected two different axes"
            )
        self._dataset = _open_ndtiff(self.path)
        try:
            self._entries = list(self._dataset.index.items())
            self._check_entries()
            self._maps = {
                "angle": self._axis_map(self.angle_axis, N_ANGLES),
                "phase": self._axis_map(self.phase_axis, N_PHASES),
            }
            first_meta = self._read_metadata(dict(self._entries[0][0]))
        except BaseException:
            self.close()
            raise
        self.n_frames = len(self._entries)
        first = self._entries[0][1]
        self.frame_shape = (int(first.image_height), int(first.image_width))
        self.dtype = np.dtype(np.uint8 if _NDTIFF_BYTES[first.pixel_type] == 1 else np.uint16)
        try:
            check_frame_memory(self.frame_shape, self.dtype.itemsize, str(self.path))
        except MLSimError:
            self.close()
            raise
        summary = getattr(self._dataset, "summary_metadata", None) or {}
        self.summary_metadata: dict[str, Any] = dict(summary)
        self.simulated = bool(first_meta.get(SIMULATED_KEY, False))
        self.pixel_size_um = (
            pixel_size_um
            if pixel_size_um is not None
            else _recorded(PIXEL_SIZE_KEY, first_meta, summary)
        )
        self.na = _recorded(NA_KEY, first_meta, summary)
        self.wavelength_nm = _recorded(WAVELENGTH_KEY, first_meta, summary)

    def _check_entries(self) -> None:
        """Every indexed image and its metadata lies inside an existing, complete file."""
        if not self._entries:
            raise MLSimError(f"{self.path}: NDTiff dataset holds no images; expected raw frames")
        sizes: dict[str, int] = {}
        shape = None
        for i, (key, entry) in enumerate(self._entries):
            if entry.pixel_type == _NDTIFF_RGB or entry.pixel_type not in _NDTIFF_BYTES:
                raise MLSimError(
                    f"{self.path}: image {dict(key)} has NDTiff pixel type {entry.pixel_type} "
                    "(RGB or unknown); expected 8- to 16-bit grayscale frames"
                )
            this_shape = (entry.image_height, entry.image_width, entry.pixel_type)
            if shape is None:
                shape = this_shape
            elif this_shape != shape:
                raise MLSimError(
                    f"{self.path}: image {dict(key)} is {this_shape[0]}x{this_shape[1]} "
                    f"(pixel type {this_shape[2]}); expected {shape[0]}x{shape[1]} (pixel type "
                    f"{shape[2]}) like the first image"
                )
            size = sizes.get(entry.filename)
            if size is None:
                file = self.path / entry.filename
                if not file.is_file():
                    raise MLSimError(
                        f"{self.path}: data file {entry.filename} of image {dict(key)} is "
                        "missing; expected a complete NDTiff dataset"
                    )
                size = sizes[entry.filename] = file.stat().st_size
            pixel_end = entry.pix_offset + (
                entry.image_width * entry.image_height * _NDTIFF_BYTES[entry.pixel_type]
            )
            meta_end = entry.metadata_offset + entry.metadata_length
            if max(pixel_end, meta_end) > size:
                raise MLSimError(
                    f"{self.path}: {entry.filename} is truncated: image {i} {dict(key)} ends at "
                    f"byte {max(pixel_end, meta_end)} of a {size}-byte file; expected a complete "
                    "NDTiff dataset"
                )

    def _axis_map(self, name: str, size: int) -> dict[Any, int]:
        values = sorted({dict(key).get(name) for key, _ in self._entries}, key=_sort_key)
        if None in values:
            found = sorted({k for key, _ in self._entries for k, _ in key})
            raise MLSimError(
                f"{self.path}: some images have no {name!r} axis (axes: {', '.join(found)}); "
                f"expected {name} on every image, or --angle-axis/--phase-axis naming the axes"
            )
        if len(values) != size:
            raise MLSimError(
                f"{self.path}: axis {name!r} has {len(values)} values {values[:8]}; expected {size}"
            )
        if values == list(range(size)):
            return {v: v for v in values}
        log.info("%s: axis %r values %s taken as indices 0..%d", self.path, name, values, size - 1)
        return {v: i for i, v in enumerate(values)}

    def _read_metadata(self, axes: dict[str, Any]) -> dict[str, Any]:
        try:
            meta = self._dataset.read_metadata(**axes)
        except Exception as exc:
            raise MLSimError(
                f"{self.path}: cannot read the metadata of image {axes} "
                f"({type(exc).__name__}: {one_line(exc)}); expected a readable NDTiff dataset"
            ) from exc
        if not isinstance(meta, Mapping):
            raise MLSimError(
                f"{self.path}: metadata of image {axes} is {type(meta).__name__}; expected a dict"
            )
        return dict(meta)

    def __iter__(self) -> Iterator[Frame]:
        angle_map, phase_map = self._maps["angle"], self._maps["phase"]
        for key, _entry in self._entries:
            recorded = dict(key)
            try:
                image = np.asarray(self._dataset.read_image(**recorded))
            except Exception as exc:
                raise MLSimError(
                    f"{self.path}: cannot read image {recorded} ({type(exc).__name__}: "
                    f"{one_line(exc)}); expected a complete, readable NDTiff dataset"
                ) from exc
            if image.shape != self.frame_shape:
                raise MLSimError(
                    f"{self.path}: image {recorded} has shape {image.shape}; expected "
                    f"{self.frame_shape}"
                )
            metadata = self._read_metadata(recorded)
            axes = {
                k: v for k, v in recorded.items() if k not in (self.angle_axis, self.phase_axis)
            }
            axes["angle"] = angle_map[recorded[self.angle_axis]]
            axes["phase"] = phase_map[recorded[self.phase_axis]]
            yield image, axes, metadata

    def close(self) -> None:
        """Release the dataset's files."""
        with contextlib.suppress(Exception):
            self._dataset.close()

    def __enter__(self) -> NDTiffSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"NDTiffSource({str(self.path)!r}, frames={getattr(self, 'n_frames', '?')}, "
            f"frame_shape={getattr(self, 'frame_shape', '?')})"
        )


def _open_ndtiff(path: Path) -> Any:
    """Open a dataset with ndtiff; its progress prints go to the log, its failures to MLSimError."""
    from ndtiff import Dataset

    chatter = io.StringIO()
    try:
        with (
            contextlib.redirect_stdout(chatter),
            warnings.catch_warnings(record=True) as caught,
        ):
            warnings.simplefilter("always")
            dataset = Dataset(str(path))
    except Exception as exc:
        raise MLSimError(
            f"{path}: cannot open the NDTiff dataset ({type(exc).__name__}: {one_line(exc)}); "
            "expected a complete Pycro-Manager NDTiff dataset"
        ) from exc
    for w in caught:
        log.warning("%s: %s", path, one_line(w.message))
    if not hasattr(dataset, "index") or not hasattr(dataset, "read_image"):
        with contextlib.suppress(Exception):
            dataset.close()
        raise MLSimError(
            f"{path}: {type(dataset).__name__} (multi-resolution or pre-v3 NDTiff) is not "
            "supported; expected an NDTiff v3 dataset as written by Pycro-Manager acquisitions"
        )
    return dataset


# --------------------------------------------------------------------------------------------
# choosing a source


def is_ndtiff(path: str | os.PathLike[str]) -> bool:
    """True for an NDTiff dataset folder (or its ``NDTiff.index`` file)."""
    path = Path(path)
    if path.is_file() and path.name == NDTIFF_INDEX:
        return True
    return path.is_dir() and (path / NDTIFF_INDEX).is_file()


def open_source(
    path: str | os.PathLike[str],
    *,
    order: str = "angle-major",
    angle_axis: str | None = None,
    phase_axis: str | None = None,
    pixel_size_um: float | None = None,
) -> TiffSource | NDTiffSource:
    """Open recorded raw data by its type: an NDTiff dataset folder, or a ``.tif``/``.tiff``.

    Parameters
    ----------
    path : path-like
        A folder holding ``NDTiff.index`` (or that file), or a TIFF file.
    order : {"angle-major", "phase-major"}
        Frame order of a plain TIFF stack.
    angle_axis, phase_axis : str, optional
        Which axes hold angle and phase: TIFF axis letters (``C``, ``Z``, ...) for a TIFF,
        recorded axis names (``channel``, ``z``, ...) for an NDTiff dataset. Both or neither.
    pixel_size_um : float, optional
        Overrides the recorded pixel size.

    Raises
    ------
    MLSimError
        Missing input, an unknown kind of input, or a file that cannot be read.
    """
    path = Path(path)
    if (angle_axis is None) != (phase_axis is None):
        raise MLSimError(
            f"angle axis {angle_axis!r}, phase axis {phase_axis!r}; expected both axes or neither"
        )
    if not path.exists():
        raise MLSimError(
            f"{path}: no such file or folder; expected a TIFF file or an NDTiff dataset folder"
        )
    if is_ndtiff(path):
        folder = path.parent if path.is_file() else path
        return NDTiffSource(
            folder, angle_axis=angle_axis, phase_axis=phase_axis, pixel_size_um=pixel_size_um
        )
    if path.is_dir():
        raise MLSimError(
            f"{path}: folder without {NDTIFF_INDEX}; expected an NDTiff dataset folder or a "
            "TIFF file (use `mlsim-live reconstruct` for folders of TIFF files)"
        )
    if path.suffix.lower() not in TIFF_SUFFIXES:
        raise MLSimError(
            f"{path}: suffix {path.suffix!r}; expected a .tif/.tiff file or an NDTiff dataset "
            "folder"
        )
    return TiffSource(
        path,
        order=order,
        angle_axis=angle_axis,
        phase_axis=phase_axis,
        pixel_size_um=pixel_size_um,
    )


# --------------------------------------------------------------------------------------------
# helpers


def _recorded(key: str, *metadata: Mapping[str, Any]) -> float | None:
    """The first positive number under ``key`` in the metadata dicts, in order."""
    for meta in metadata:
        value = _positive(meta.get(key))
        if value is not None:
            return value
    return None


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 and np.isfinite(number) else None


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (2, "")
    if isinstance(value, (int, float, np.integer)):
        return (0, value)
    return (1, str(value))


def describe(source: FrameSource) -> dict[str, Any]:
    """JSON-able description of a source, for the summary."""
    return {
        "path": str(source.path),
        "format": source.format,
        "frames": int(source.n_frames),
        "frame_shape": [int(n) for n in source.frame_shape],
        "dtype": np.dtype(source.dtype).name,
        "pixel_size_um": source.pixel_size_um,
        "simulated": bool(source.simulated),
    }
