"""Frame readers of a TIFF series and `GroupArray`, the lazy ``(T, 9, H, W)`` view built on them.

Contiguous uncompressed data is read with positional file reads (flat memory on files of any
size); anything else page by page through tifffile.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlsim_live.constants import GROUP_SIZE
from mlsim_live.errors import MLSimError, one_line
from mlsim_live.io.tifffile_log import _capture_tifffile_log

if TYPE_CHECKING:  # pragma: no cover
    import tifffile


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
            view = flat[i:j].data.cast("B")
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
                data = self._tif.asarray(  # decoded here: its log is this thread's
                    key=[int(f) for f in frames], series=self._series_index, maxworkers=1
                )
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
    numbers = [int(f) for f in frames]
    if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
        return f"{numbers[0]}-{numbers[-1]}"
    return ",".join(map(str, numbers))


class GroupArray:
    """Lazy, read-only ``(T, 9, H, W)`` view of the raw frames in a file, angle-major.

    Indexing reads only the groups asked for, then indexes like numpy: ``groups[t]`` is one
    ``(9, H, W)`` group, ``groups[a:b]`` a ``(b - a, 9, H, W)`` array, ``groups[a:b, k]`` frame
    ``k`` of each of those groups, ``groups[[0, 2]]`` or a boolean mask over the groups picks
    groups. ``np.asarray(groups)`` reads everything.
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
            key, rest = (key[0], key[1:]) if key else (slice(None), ())
        if key is Ellipsis:  # the other indices count from the last axis: read every group
            everything = (Ellipsis, *rest)
            return self[:][everything]
        if isinstance(key, (int, np.integer)):
            out = self._read(self._frame_index[self._group_number(int(key))])
            return out[rest] if rest else out  # the group axis is gone: rest starts at frames
        ts = self._group_numbers(key)
        out = np.empty((len(ts), *self.shape[1:]), self.dtype)
        for i, t in enumerate(ts):
            out[i] = self._read(self._frame_index[t])
        after_groups = (slice(None), *rest)  # rest indexes the axes after the groups
        return out[after_groups]

    def _group_number(self, t: int) -> int:
        """Group ``t`` (negative: from the end) as an index in ``range(T)``."""
        n = len(self)
        if not -n <= t < n:
            raise IndexError(f"group {t} out of range for {n} groups")
        return t % n

    def _group_numbers(self, key: Any) -> list[int]:
        """The groups a slice, a sequence of group numbers or a boolean mask selects."""
        if isinstance(key, slice):
            return list(range(len(self))[key])
        picks = np.asarray(key)
        if picks.dtype == bool:
            if picks.shape != (len(self),):
                raise IndexError(
                    f"boolean index of shape {picks.shape} for {len(self)} groups; "
                    f"expected shape ({len(self)},)"
                )
            return [int(t) for t in np.flatnonzero(picks)]
        if picks.ndim != 1 or not np.issubdtype(picks.dtype, np.integer):
            raise IndexError(
                f"group index {key!r}; expected an int, a slice, a 1-D sequence of ints or a "
                "boolean mask"
            )
        return [self._group_number(int(t)) for t in picks]

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
    if contiguous and dataoffset is not None:  # (the second test narrows its type)
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
