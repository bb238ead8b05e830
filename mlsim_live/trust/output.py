"""Trust maps to files: ``<stem>_trust.tif`` (float32, on the reconstruction's grid), a PNG
overlay (the reconstruction in grey, untrusted pixels in colour) and ``<stem>_trust.json``
(per-group figures)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlsim_live.errors import MLSimError, one_line
from mlsim_live.trust.map import FLAG_LEVEL, TrustFigures, TrustSettings
from mlsim_live.trust.stream import TrustStream

log = logging.getLogger(__name__)

#: Colour of untrusted pixels in the overlay (RGB).
FLAG_COLOUR = (255, 60, 30)
#: Blend of the colour at trust 0.5 and at trust 0.
OVERLAY_ALPHA = (0.35, 0.85)


@dataclass(frozen=True)
class TrustPaths:
    """Where the trust outputs of one reconstruction go."""

    tif: Path
    png: Path
    json: Path

    @classmethod
    def beside(cls, folder: str | os.PathLike[str], stem: str) -> TrustPaths:
        """``folder/<stem>_trust.tif``, ``.png`` and ``.json``."""
        base = Path(folder) / f"{stem}_trust"
        return cls(base.with_suffix(".tif"), base.with_suffix(".png"), base.with_suffix(".json"))

    def all(self) -> tuple[Path, Path, Path]:
        """The three paths."""
        return self.tif, self.png, self.json


def overlay(sr: np.ndarray, trust: np.ndarray) -> np.ndarray:
    """RGB uint8 picture: ``sr`` in grey (0.5th to 99.8th percentile), flagged pixels (trust
    below 0.5) blended towards `FLAG_COLOUR`, the more the lower their trust."""
    img = np.asarray(sr, dtype=np.float32)
    lo, hi = np.percentile(img, (0.5, 99.8))
    grey = np.clip((img - lo) / max(float(hi - lo), 1e-12), 0.0, 1.0)
    t = np.asarray(trust, dtype=np.float32)
    depth = np.clip((FLAG_LEVEL - t) / FLAG_LEVEL, 0.0, 1.0)
    alpha = np.where(
        t < FLAG_LEVEL, OVERLAY_ALPHA[0] + (OVERLAY_ALPHA[1] - OVERLAY_ALPHA[0]) * depth, 0.0
    )
    colour = np.asarray(FLAG_COLOUR, np.float32) / 255.0
    rgb = grey[..., None] * (1.0 - alpha[..., None]) + colour * alpha[..., None]
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_png_atomic(path: str | os.PathLike[str], rgb: np.ndarray, *, overwrite: bool) -> Path:
    """Write an RGB uint8 image as PNG, atomically (Pillow)."""
    from PIL import Image

    from mlsim_live.io.atomic import atomic_path

    with atomic_path(path, overwrite=overwrite) as tmp:
        Image.fromarray(rgb, "RGB").save(tmp, format="PNG")
    return Path(path)


def summarize(figures: list[TrustFigures | None]) -> dict[str, Any]:
    """Figures over the groups: flagged fraction (p50, p95, mean) and median chi (p50)."""
    done = [f for f in figures if f is not None]
    if not done:
        return {"groups": len(figures), "groups_mapped": 0}
    flagged = np.array([f.flagged_fraction for f in done])
    chi = np.array([f.chi_median for f in done])
    scale = np.array([f.residual_scale for f in done])
    return {
        "groups": len(figures),
        "groups_mapped": len(done),
        "flagged_fraction": {
            "p50": float(np.percentile(flagged, 50)),
            "p95": float(np.percentile(flagged, 95)),
            "mean": float(flagged.mean()),
        },
        "chi_median": {"p50": float(np.percentile(chi, 50))},
        "residual_scale": {"p50": float(np.percentile(scale, 50))},
    }


def check_outputs(paths: TrustPaths, overwrite: bool) -> None:
    """Raise `MLSimError` when an output exists and ``overwrite`` is false."""
    from mlsim_live.io.atomic import check_writable

    for path in paths.all():
        check_writable(path, overwrite)


class ReconstructionFile:
    """A reconstruction TIFF (2D, or T pages) as ``n_groups`` images, read one at a time.

    Attributes
    ----------
    path : Path
    n_groups : int
    frame_shape : (int, int)
    """

    def __init__(
        self, path: Path, data: np.ndarray, n_groups: int, frame_shape: tuple[int, int]
    ) -> None:
        self.path = path
        self._data = data
        self.n_groups = n_groups
        self.frame_shape = frame_shape

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ReconstructionFile:
        """Open ``path`` (memory-mapped when the file allows it).

        Raises
        ------
        MLSimError
            When it is no readable TIFF or not a numeric 2D image or 3D stack.
        """
        import tifffile

        path = Path(path)
        data: np.ndarray
        try:
            try:
                data = tifffile.memmap(path, mode="r")
            except (ValueError, OSError, tifffile.TiffFileError):
                data = tifffile.imread(path)
        except (ValueError, OSError, tifffile.TiffFileError) as exc:
            raise MLSimError(
                f"SR {path}: cannot read it as TIFF ({one_line(exc, 200)}); expected a "
                "reconstruction TIFF"
            ) from exc
        arr: np.ndarray = np.asarray(data) if not isinstance(data, np.ndarray) else data
        shape = tuple(int(s) for s in arr.shape if s != 1)
        if len(shape) not in (2, 3) or not np.issubdtype(arr.dtype, np.number):
            raise MLSimError(
                f"SR {path}: an array of shape {tuple(arr.shape)} ({arr.dtype}); expected a "
                "numeric image (2N x 2M) or stack (T x 2N x 2M)"
            )
        arr = arr.reshape(shape)
        if len(shape) == 2:
            arr = arr[None]
        return cls(path, arr, int(arr.shape[0]), (int(arr.shape[1]), int(arr.shape[2])))

    def image(self, t: int) -> np.ndarray:
        """Image ``t`` as float32."""
        img = np.asarray(self._data[t], dtype=np.float32)
        if not np.isfinite(img.sum(dtype=np.float64)):
            raise MLSimError(f"SR {self.path}: image {t} holds NaN or Inf; expected finite values")
        return img


def write_trust(
    paths: TrustPaths,
    raw_group: Callable[[int], np.ndarray],
    sr_group: Callable[[int], np.ndarray],
    n_groups: int,
    stream: TrustStream,
    *,
    pixel_size_um: float | None = None,
    info: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Map every group and write the three outputs; return what the JSON holds.

    Parameters
    ----------
    paths : TrustPaths
    raw_group, sr_group : callable
        ``raw_group(t)`` the raw group ``t`` (9, H, W), ``sr_group(t)`` its reconstruction
        (2H, 2W); read one at a time, so memory stays flat.
    n_groups : int
    stream : TrustStream
        Holds the pattern estimate and noise across the groups.
    pixel_size_um : float, optional
        Pixel size of the reconstruction, written into the TIFF.
    info : dict, optional
        Extra JSON fields (inputs, method, ...).
    overwrite : bool
        Replace existing outputs.

    Returns
    -------
    dict
        The JSON document.

    Raises
    ------
    MLSimError
        For bad input; nothing is left behind.
    """
    from mlsim_live.io import write_json_atomic, write_tiff_atomic, write_tiff_stack_atomic

    if n_groups < 1:
        raise MLSimError("no groups to map; expected at least one SIM group")
    check_outputs(paths, overwrite)
    figures: list[TrustFigures] = []
    first: dict[str, np.ndarray] = {}

    def maps() -> Iterator[np.ndarray]:
        for t in range(n_groups):
            sr = np.asarray(sr_group(t), dtype=np.float32)
            try:
                result = stream.compute(raw_group(t), sr)
            except MLSimError as exc:
                raise MLSimError(f"group {t}: {one_line(exc, 300)}") from exc
            figures.append(result.figures)
            if t == 0:
                first["sr"], first["trust"] = sr, result.trust
            yield result.trust

    meta = {"content": "trust map: 1 = consistent with the raw data, < 0.5 = flagged"}
    written: list[Path] = []
    try:
        if n_groups == 1:
            trust = next(maps())
            write_tiff_atomic(paths.tif, trust, pixel_size_um, meta, overwrite)
        else:
            gen = maps()
            head = next(gen)

            def pages() -> Iterator[np.ndarray]:
                yield head
                yield from gen

            write_tiff_stack_atomic(
                paths.tif, pages(), (n_groups, *head.shape), pixel_size_um, meta, overwrite
            )
        written.append(paths.tif)
        write_png_atomic(paths.png, overlay(first["sr"], first["trust"]), overwrite=overwrite)
        written.append(paths.png)
        doc = {
            **(info or {}),
            "trust_tif": str(paths.tif),
            "overlay_png": str(paths.png),
            "overlay_group": 0,
            "flag_level": FLAG_LEVEL,
            "settings": _settings_dict(stream),
            "noise": stream.noise.to_dict() if stream.noise is not None else None,
            "estimate": stream.estimate.to_dict() if stream.estimate is not None else None,
            "summary": summarize(list(figures)),
            "per_group": [f.to_dict() for f in figures],
        }
        write_json_atomic(paths.json, doc, overwrite=overwrite)
    except BaseException:
        for path in written:  # no map without its figures
            path.unlink(missing_ok=True)
        raise
    log.info(
        "wrote %s: flagged fraction %.3f (median over %d group%s)",
        paths.tif,
        doc["summary"]["flagged_fraction"]["p50"],
        n_groups,
        "" if n_groups == 1 else "s",
    )
    return doc


def check_match(stack: Any, sr: ReconstructionFile) -> None:
    """Raise `MLSimError` unless ``sr`` holds one 2x-grid image per group of ``stack``."""
    h, w = stack.frame_shape
    if sr.frame_shape != (2 * h, 2 * w):
        raise MLSimError(
            f"SR {sr.path}: images of {sr.frame_shape[0]} x {sr.frame_shape[1]} pixels for "
            f"raw frames of {h} x {w}; expected the 2x grid, {2 * h} x {2 * w}"
        )
    if sr.n_groups != stack.n_groups:
        raise MLSimError(
            f"SR {sr.path} holds {sr.n_groups} image(s) for {stack.n_groups} raw group(s) in "
            f"{stack.path}; expected one reconstruction per group"
        )


def trust_for_stack(
    stack: Any,
    sr_path: str | os.PathLike[str] | ReconstructionFile,
    paths: TrustPaths,
    *,
    optics: Any = None,
    offset_adu: float | None = None,
    settings: TrustSettings | None = None,
    pixel_size_um: float | None = None,
    info: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """The trust outputs of the reconstruction file ``sr_path`` of a raw stack.

    Parameters
    ----------
    stack : mlsim_live.io.RawStack
        The raw frames (``stack.group(t)``, ``stack.n_groups``, ``stack.frame_shape``).
    sr_path : path-like or ReconstructionFile
        Its reconstruction: one 2x-grid image per group.
    paths : TrustPaths
    optics : Optics, optional
        The OTF for the pattern estimate (estimated from the data when None).
    offset_adu : float, optional
        Camera offset for the pattern estimate.
    settings : TrustSettings, optional
    pixel_size_um : float, optional
        Pixel size of the reconstruction (written into the map).
    info : dict, optional
        Extra JSON fields.
    overwrite : bool

    Raises
    ------
    MLSimError
        When the reconstruction does not match the raw stack (grid, number of groups).
    """
    sr = sr_path if isinstance(sr_path, ReconstructionFile) else ReconstructionFile.open(sr_path)
    check_match(stack, sr)
    stream = TrustStream(optics, settings, offset_adu=offset_adu)
    doc_info = {
        "raw": str(stack.path),
        "sr": str(sr.path),
        "optics": optics.to_dict() if optics is not None else None,
        **(info or {}),
    }
    return write_trust(
        paths,
        stack.group,
        sr.image,
        stack.n_groups,
        stream,
        pixel_size_um=pixel_size_um,
        info=doc_info,
        overwrite=overwrite,
    )


def _settings_dict(stream: TrustStream) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(stream.settings)


__all__ = [
    "FLAG_COLOUR",
    "ReconstructionFile",
    "TrustPaths",
    "check_match",
    "check_outputs",
    "overlay",
    "summarize",
    "trust_for_stack",
    "write_png_atomic",
    "write_trust",
]
