"""What the plugin's napari layers hold, as napari layer-data tuples ``(data, kwargs, type)``:
names, scales, offsets and colormaps of raw SIM frames, widefield, SR and trust images.

No napari and no Qt here: the reader, the widget and the live layer build their layers from these
functions, and the tests check them without a viewer.

Geometry. A raw stack is shown as its ``9*T`` frames, angle-major (group ``t`` is frames
``9t .. 9t+8``), with the camera pixel size as scale (µm; 1 when unknown). A per-group image
(widefield, SR, trust) of ``T`` groups gets the scale 9 along that axis, centred on its group's
frames, so each group's images stay on screen while the slider runs through its 9 raw frames. An
image on an ``f``-times finer grid has the pixel ``p / f`` and is shifted by ``(p/f - p) / 2``,
so its pixels cover exactly the raw pixels they came from.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlsim_live.constants import GROUP_SIZE, N_PHASES

#: napari's layer-data tuple: ``(data, layer keyword arguments, layer type)``.
LayerData = tuple[Any, dict[str, Any], str]

#: Key of the plugin's entry in a layer's ``metadata``.
META_KEY = "mlsim_live"
#: What a layer holds (``metadata[META_KEY]["kind"]``).
KINDS = ("raw", "widefield", "sr", "trust")
#: Gap between the widefield and the SR image shown side by side, as a fraction of the width.
SIDE_BY_SIDE_GAP = 0.04
#: File-name endings of the outputs of ``reconstruct``, ``replay``, ``demo`` and ``trust``.
SR_SUFFIX = "_sr"
RAW_SUFFIX = "_raw"
TRUST_SUFFIX = "_trust"


# --------------------------------------------------------------------------------------------
# names


def layer_name(stem: str, kind: str, method: str | None = None) -> str:
    """``"<stem> raw"``, ``"<stem> widefield"``, ``"<stem> SR <method>"``, ``"<stem> trust"``."""
    what = {"raw": "raw", "widefield": "widefield", "sr": "SR", "trust": "trust"}[kind]
    return f"{stem} {what}" + (f" {method}" if method else "")


def file_kind(path: str | Path) -> tuple[str, str]:
    """``(kind, stem)`` of a TIFF by its name: ``("sr", "cells")`` for ``cells_sr.tif``,
    ``("trust", "cells")`` for ``cells_trust.tif``, else ``("raw", "cells")``.

    A trailing ``_raw`` (``simulate``'s ``sim_0000_raw.tif``) is dropped too, so a raw stack and
    its reconstruction (``sim_0000_raw_sr.tif``) share the stem ``sim_0000``.
    """
    from mlsim_live.io import output_stem

    stem, kind = output_stem(Path(path)), "raw"
    for what, suffix in (("sr", SR_SUFFIX), ("trust", TRUST_SUFFIX)):
        if stem.endswith(suffix) and len(stem) > len(suffix):
            stem, kind = stem[: -len(suffix)], what
            break
    if stem.endswith(RAW_SUFFIX) and len(stem) > len(RAW_SUFFIX):
        stem = stem[: -len(RAW_SUFFIX)]
    return kind, stem


# --------------------------------------------------------------------------------------------
# raw frames


class LazyStack:
    """Read-only ``(N, H, W)`` array whose frame ``i`` is ``read(i)``, read when indexed.

    napari slices it like a numpy array; only the frames a slice touches are read.
    """

    def __init__(
        self, shape: tuple[int, int, int], dtype: Any, read: Callable[[int], np.ndarray]
    ) -> None:
        self._read = read
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(s) for s in shape)
        self.ndim = 3
        self.size = int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        rest: tuple[Any, ...] = ()
        if isinstance(key, tuple):
            if key and key[0] is Ellipsis:
                key = (slice(None),) * (self.ndim - len(key) + 1) + key[1:]
            key, rest = (key[0], key[1:]) if key else (slice(None), ())
        if isinstance(key, (int, np.integer)):
            i = int(key) + (self.shape[0] if int(key) < 0 else 0)
            if not 0 <= i < self.shape[0]:
                raise IndexError(f"index {key} out of range for {self.shape[0]} frames")
            out = np.asarray(self._read(i), dtype=self.dtype)
            return out[rest] if rest else out
        indices = np.arange(self.shape[0])[key]
        out = np.empty((len(indices), *self.shape[1:]), self.dtype)
        for k, i in enumerate(indices):
            out[k] = self._read(int(i))
        every_frame: tuple[Any, ...] = (slice(None), *rest)
        return out[every_frame] if rest else out

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype})"


class FrameArray(LazyStack):
    """Lazy ``(9*T, H, W)`` view of a `mlsim_live.io.GroupArray`, frames angle-major.

    Frame ``9t + k`` is slot ``k`` (angle ``k // 3``, phase ``k % 3``) of group ``t``, whatever
    the file's own order. The last group read is kept, so stepping through a group's 9 frames
    reads the file once.
    """

    def __init__(self, groups: Any) -> None:
        n_groups, n_slots, height, width = groups.shape
        self._groups = groups
        self._lock = threading.Lock()
        self._cached: tuple[int, np.ndarray] | None = None
        super().__init__((n_groups * n_slots, height, width), groups.dtype, self._frame)

    def _frame(self, f: int) -> np.ndarray:
        t, k = divmod(f, GROUP_SIZE)
        with self._lock:
            if self._cached is None or self._cached[0] != t:
                self._cached = (t, np.asarray(self._groups[t]))
            return self._cached[1][k]


def frame_labels(n_groups: int) -> list[str]:
    """``"t0 a1 p2"`` for each frame of ``n_groups`` angle-major groups."""
    return [
        f"t{t} a{k // N_PHASES} p{k % N_PHASES}" for t in range(n_groups) for k in range(GROUP_SIZE)
    ]


# --------------------------------------------------------------------------------------------
# geometry


@dataclass(frozen=True)
class Placement:
    """Where a layer's pixels lie in the viewer's world (µm when the pixel size is known).

    Attributes
    ----------
    scale, translate : tuple of float
        napari's per-axis ``scale`` and ``translate`` of the layer.
    """

    scale: tuple[float, ...]
    translate: tuple[float, ...]

    def kwargs(self) -> dict[str, Any]:
        """``scale`` and ``translate`` as napari layer keyword arguments."""
        return {"scale": list(self.scale), "translate": list(self.translate)}


@dataclass(frozen=True)
class RawGeometry:
    """A raw layer's layout and placement, the frame of reference of its per-group images.

    Attributes
    ----------
    layout : {"frames", "groups"}
        ``"frames"``: data ``(9*T, H, W)`` (or ``(9, H, W)``); ``"groups"``: ``(T, 9, H, W)``.
    n_groups : int
    frame_shape : (int, int)
    scale, translate : tuple of float
        The raw layer's own, one per data axis.
    """

    layout: str
    n_groups: int
    frame_shape: tuple[int, int]
    scale: tuple[float, ...]
    translate: tuple[float, ...]

    @classmethod
    def of_file(cls, n_groups: int, frame_shape: tuple[int, int], pixel_size_um: float | None):
        """The geometry of a raw stack as the reader shows it (frames at the origin)."""
        pixel = float(pixel_size_um) if pixel_size_um else 1.0
        return cls("frames", n_groups, frame_shape, (1.0, pixel, pixel), (0.0, 0.0, 0.0))

    @property
    def width(self) -> float:
        """Width of a raw frame in world units."""
        return self.frame_shape[1] * self.scale[-1]

    def images(self, factor: float = 1.0, offset_x: float = 0.0) -> Placement:
        """Placement of one image per group on a ``factor``-times finer grid.

        One group: a 2D image. ``T`` groups in ``"frames"`` layout: ``(T, h, w)``, each image
        spanning its group's 9 frames; in ``"groups"`` layout: ``(T, 1, h, w)``.
        """
        sy, sx = self.scale[-2:]
        ty, tx = self.translate[-2:]
        qy, qx = sy / factor, sx / factor
        spatial_scale = (qy, qx)
        spatial_translate = (ty + (qy - sy) / 2, tx + (qx - sx) / 2 + offset_x)
        if self.n_groups == 1:
            return Placement(spatial_scale, spatial_translate)
        s_f, t_f = self.scale[-3], self.translate[-3]
        along = (GROUP_SIZE * s_f, t_f + (GROUP_SIZE - 1) / 2 * s_f)
        if self.layout == "frames":
            return Placement((along[0], *spatial_scale), (along[1], *spatial_translate))
        return Placement(
            (self.scale[0], along[0], *spatial_scale),
            (self.translate[0], along[1], *spatial_translate),
        )

    def side_offset(self) -> float:
        """x shift that puts an image beside the raw frames instead of over them."""
        return self.width * (1.0 + SIDE_BY_SIDE_GAP)

    def shape_images(self, images: Any) -> Any:
        """``(T, h, w)`` images in the shape `images` places: 2D for one group, ``(T, 1, h, w)``
        in ``"groups"`` layout; a `LazyStack` of ``"frames"`` stays as it is."""
        if images.ndim == 2:
            return images
        if self.n_groups == 1:
            return np.asarray(images[0])
        if self.layout == "groups":
            return np.asarray(images)[:, None]
        return images


# --------------------------------------------------------------------------------------------
# layer data


def display_limits(data: Any) -> tuple[float, float]:
    """Contrast limits at the 0.1th and 99.95th percentile (as the live viewer's)."""
    from mlsim_live.viewer.imaging import auto_levels

    return auto_levels(np.asarray(data))


def trust_colormap() -> dict[str, Any]:
    """napari colormap of a trust map: transparent from `FLAG_LEVEL` up, below it the trust
    overlay's colour, more opaque the lower the trust (as the PNG overlay of ``trust``)."""
    from mlsim_live.trust import FLAG_LEVEL
    from mlsim_live.trust.output import FLAG_COLOUR, OVERLAY_ALPHA

    r, g, b = (c / 255.0 for c in FLAG_COLOUR)
    return {
        "name": "mlsim-live trust",
        "colors": [
            [r, g, b, OVERLAY_ALPHA[1]],
            [r, g, b, OVERLAY_ALPHA[0]],
            [r, g, b, 0.0],
            [r, g, b, 0.0],
        ],
        "controls": [0.0, FLAG_LEVEL, min(1.0, FLAG_LEVEL + 1e-3), 1.0],
    }


def spatial_units(ndim: int) -> tuple[str, ...]:
    """napari ``units`` of a layer whose last two axes are in µm (the others in frames)."""
    return ("pixel",) * (ndim - 2) + ("um", "um")


def _meta(kind: str, **fields: Any) -> dict[str, Any]:
    return {META_KEY: {"kind": kind, **{k: v for k, v in fields.items() if v is not None}}}


def raw_layer(stack: Any, stem: str) -> LayerData:
    """The layer of a `mlsim_live.io.RawStack`: its ``9*T`` frames, angle-major, lazily read."""
    data = FrameArray(stack.groups)
    geometry = RawGeometry.of_file(stack.n_groups, stack.frame_shape, stack.pixel_size_um)
    kwargs = {
        "name": layer_name(stem, "raw"),
        **Placement(geometry.scale, geometry.translate).kwargs(),
        "contrast_limits": display_limits(stack.groups[0]),
        "axis_labels": ("frame", "y", "x"),
        "metadata": _meta(
            "raw",
            stem=stem,
            path=str(stack.path),
            n_groups=stack.n_groups,
            order="angle-major",
            file_order=stack.order,
            format=stack.format,
            pixel_size_um=stack.pixel_size_um,
            na=stack.na,
            wavelength_nm=stack.wavelength_nm,
        ),
    }
    if stack.pixel_size_um:
        kwargs["units"] = spatial_units(3)
    return data, kwargs, "image"


def group_image_layer(
    images: np.ndarray,
    geometry: RawGeometry,
    *,
    kind: str,
    stem: str,
    method: str | None = None,
    factor: float = 1.0,
    offset_x: float = 0.0,
    metadata: dict[str, Any] | None = None,
) -> LayerData:
    """The layer of one image per group (widefield, SR or trust), placed over its raw frames.

    Parameters
    ----------
    images : ndarray, (T, h, w) or (h, w)
        One image per group of ``geometry``.
    geometry : RawGeometry
        The raw frames the images belong to.
    kind : {"widefield", "sr", "trust"}
    stem, method : str
        For the layer name.
    factor : float
        The images' grid is ``factor`` times finer than the raw frames' (2 for SR).
    offset_x : float
        Shift along x in world units (`RawGeometry.side_offset` puts it beside the raw).
    metadata : dict, optional
        Extra fields of the layer's ``metadata[META_KEY]``.
    """
    if not isinstance(images, LazyStack):
        images = np.asarray(images, dtype=np.float32)
    placement = geometry.images(factor, offset_x)
    kwargs: dict[str, Any] = {
        "name": layer_name(stem, kind, method),
        **placement.kwargs(),
        "metadata": _meta(kind, stem=stem, method=method, factor=factor, **(metadata or {})),
    }
    if kind == "trust":
        kwargs.update(colormap=trust_colormap(), contrast_limits=(0.0, 1.0), blending="translucent")
    else:
        middle = images if images.ndim == 2 else images[images.shape[0] // 2]
        kwargs["contrast_limits"] = display_limits(middle)
    return geometry.shape_images(images), kwargs, "image"


def reconstruction_file_layer(
    path: str | Path,
    kind: str,
    stem: str,
    images: np.ndarray,
    pixel_size_um: float | None,
    info: dict[str, Any],
) -> LayerData:
    """The layer of a ``*_sr.tif`` or ``*_trust.tif``: ``(T, 2H, 2W)`` or ``(2H, 2W)`` images
    whose pixel size (from the file) is that of the finer grid.

    The raw frames they were made from are assumed ``factor`` (``info["scale"]``, default 2)
    times coarser, at the origin: the layer lies over the raw layer of the same stack.
    """
    factor = float(info.get("scale") or 2.0)
    n_groups = 1 if images.ndim == 2 else int(images.shape[0])
    raw_pixel = pixel_size_um * factor if pixel_size_um else None
    height, width = images.shape[-2:]
    geometry = RawGeometry.of_file(
        n_groups, (round(height / factor), round(width / factor)), raw_pixel
    )
    method = info.get("method") or _method_of(info.get("reconstructor"))
    meta = {"path": str(path), "pixel_size_um": pixel_size_um}
    data, kwargs, layer_type = group_image_layer(
        images, geometry, kind=kind, stem=stem, method=method, factor=factor, metadata=meta
    )
    if pixel_size_um:
        kwargs["units"] = spatial_units(data.ndim)
    return data, kwargs, layer_type


def _method_of(reconstructor: Any) -> str | None:
    """``"rcan"`` for ``"rcan:model.onnx"``, the name itself otherwise (None: unknown)."""
    if not reconstructor:
        return None
    return str(reconstructor).split(":", 1)[0]
