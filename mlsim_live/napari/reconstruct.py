"""Reconstruct the raw SIM frames of a napari layer: widefield, SR and (optionally) trust images
per group, made by the reconstructor factory of ``mlsim-live reconstruct`` (no napari, no Qt).

The dock widget runs `reconstruct` on a worker thread and adds `result_layers` to the viewer.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlsim_live.constants import GROUP_SIZE, LEARNED_METHODS, METHODS, N_ANGLES, N_PHASES, ORDERS
from mlsim_live.errors import MLSimError
from mlsim_live.napari.layers import (
    META_KEY,
    LayerData,
    RawGeometry,
    group_image_layer,
    spatial_units,
)

log = logging.getLogger(__name__)

#: Slot ``a*3 + p`` of an angle-major group is frame ``p*3 + a`` of a phase-major one.
_PHASE_MAJOR = np.array([(k % N_PHASES) * N_ANGLES + k // N_PHASES for k in range(GROUP_SIZE)])


@dataclass(frozen=True)
class RawSource:
    """The raw SIM frames of a layer, as groups of 9.

    Attributes
    ----------
    data : array-like
        The layer's data: ``(9*T, H, W)`` frames or ``(T, 9, H, W)`` groups.
    geometry : RawGeometry
        Layout, number of groups and the layer's placement.
    order : {"angle-major", "phase-major"}
        Order of the 9 frames of a group in ``data``.
    stem : str
        Base of the names of the layers made from it.
    pixel_size_um, na, wavelength_nm : float or None
        Optics the recording carries (from the plugin's reader), when known.
    """

    data: Any
    geometry: RawGeometry
    order: str
    stem: str
    pixel_size_um: float | None = None
    na: float | None = None
    wavelength_nm: float | None = None
    units: tuple[str, ...] | None = None

    @classmethod
    def of_layer(
        cls,
        data: Any,
        *,
        name: str,
        scale: Any = None,
        translate: Any = None,
        metadata: Mapping[str, Any] | None = None,
        order: str = "angle-major",
        rgb: bool = False,
        units: Any = None,
    ) -> RawSource:
        """The groups of a layer's data; its ``metadata`` (the plugin's reader) wins over
        ``order``.

        Raises
        ------
        MLSimError
            When the data is not ``9*T`` grayscale frames or ``T`` groups of 9.
        """
        meta = dict((metadata or {}).get(META_KEY, {}))
        if meta.get("kind") not in (None, "raw"):
            raise MLSimError(
                f"layer {name!r} holds a {meta['kind']} image; expected a raw SIM layer (9*T "
                "frames)"
            )
        order = meta.get("order", order)
        if order not in ORDERS:
            raise MLSimError(f"frame order {order!r}; expected one of {', '.join(ORDERS)}")
        shape = tuple(int(s) for s in data.shape)
        if rgb:
            raise MLSimError(f"layer {name!r} is RGB; expected grayscale raw SIM frames")
        if len(shape) == 3 and shape[0] % GROUP_SIZE == 0:
            layout, n_groups = "frames", shape[0] // GROUP_SIZE
        elif len(shape) == 4 and shape[1] == GROUP_SIZE:
            layout, n_groups = "groups", shape[0]
        else:
            raise MLSimError(
                f"layer {name!r} holds data of shape {shape}; expected raw SIM frames "
                f"(9*T, H, W) or groups (T, 9, H, W): {N_ANGLES} angles x {N_PHASES} phases each"
            )
        ndim = len(shape)
        geometry = RawGeometry(
            layout,
            n_groups,
            (shape[-2], shape[-1]),
            _floats(scale, ndim, 1.0),
            _floats(translate, ndim, 0.0),
        )
        stem = meta.get("stem") or (name[: -len(" raw")] if name.endswith(" raw") else name)
        unit_names = tuple(str(u) for u in units) if units is not None else None
        return cls(
            data,
            geometry,
            order,
            stem,
            meta.get("pixel_size_um"),
            meta.get("na"),
            meta.get("wavelength_nm"),
            unit_names,
        )

    @property
    def n_groups(self) -> int:
        """Number of groups T."""
        return self.geometry.n_groups

    def group(self, t: int) -> np.ndarray:
        """Group ``t`` as ``(9, H, W)``, angle-major, checked as every reader checks it."""
        from mlsim_live.io import check_group

        if self.geometry.layout == "frames":
            group = np.asarray(self.data[t * GROUP_SIZE : (t + 1) * GROUP_SIZE])
        else:
            group = np.asarray(self.data[t])
        if self.order == "phase-major":
            group = group[_PHASE_MAJOR]
        check_group(group, f"layer {self.stem}", t)
        return group


def _floats(values: Any, ndim: int, default: float) -> tuple[float, ...]:
    if values is None:
        return (default,) * ndim
    values = tuple(float(v) for v in values)
    return values[-ndim:] if len(values) >= ndim else (default,) * (ndim - len(values)) + values


@dataclass(frozen=True)
class ReconstructSettings:
    """How the widget reconstructs.

    Attributes
    ----------
    method : str
        One of `mlsim_live.constants.METHODS`.
    model : str or None
        ONNX model of a learned method; None: its shipped model.
    trust : bool
        Also map each reconstruction's trust (`mlsim_live.trust`).
    offset_adu : float or None
        Camera offset; estimated by the reconstructor when None.
    """

    method: str
    model: str | None = None
    trust: bool = False
    offset_adu: float | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise MLSimError(
                f"reconstruction method {self.method!r} is unknown; expected one of "
                f"{', '.join(METHODS)}"
            )


@dataclass(frozen=True)
class Reconstruction:
    """The images made from a `RawSource`, one per group.

    Attributes
    ----------
    widefield : ndarray, (T, H, W) float32
        Mean of each group's 9 frames.
    sr : ndarray, (T, s*H, s*W) float32
    trust : ndarray, (T, s*H, s*W) float32, or None
    method, reconstructor, provider : str
    scale : int
        SR pixels per raw pixel along each axis.
    """

    widefield: np.ndarray
    sr: np.ndarray
    trust: np.ndarray | None
    method: str
    reconstructor: str
    provider: str
    scale: int


def model_for(method: str, model: str | None) -> str | None:
    """The model file of a learned method (its shipped model when None), None otherwise."""
    if method not in LEARNED_METHODS:
        return None
    if model is not None:
        return str(model)
    from mlsim_live.paths import default_model_path

    return str(default_model_path(method))


def reconstruct(
    source: RawSource, settings: ReconstructSettings
) -> Generator[int, None, Reconstruction]:
    """Reconstruct every group of ``source``; yield the number of groups done after each.

    The reconstructor comes from `mlsim_live.batch.cached_reconstructor` (as for
    ``mlsim-live reconstruct``: built once per method, model and optics, then reused). Trust
    maps use one `mlsim_live.trust.TrustStream` (pattern and noise measured once).

    Returns
    -------
    Reconstruction
        As the generator's return value.

    Raises
    ------
    MLSimError
        For bad raw frames, a missing model or a failed reconstruction.
    """
    from mlsim_live.batch import ReconConfig, cached_reconstructor
    from mlsim_live.sim.optics import OpticsValues, resolve_optics
    from mlsim_live.validation import output_problem

    recording = OpticsValues(source.na, source.wavelength_nm, source.pixel_size_um)
    optics = resolve_optics(OpticsValues(), recording, where=f"layer {source.stem}")
    config = ReconConfig(
        method=settings.method,
        model=model_for(settings.method, settings.model),
        offset_adu=settings.offset_adu,
    )
    reconstructor, lock = cached_reconstructor(config, optics)
    stream = None
    if settings.trust:
        from mlsim_live.trust import TrustStream

        stream = TrustStream(optics, offset_adu=settings.offset_adu)
    widefield, sr, trust = [], [], []
    for t in range(source.n_groups):
        group = source.group(t)
        with lock:
            image = np.asarray(reconstructor.reconstruct(group), dtype=np.float32)
        problem = output_problem(image)
        if problem is not None:
            raise MLSimError(f"layer {source.stem}: group {t}: {problem}")
        widefield.append(group.mean(axis=0, dtype=np.float32))
        sr.append(image)
        if stream is not None:
            trust.append(stream.compute(group, image).trust.astype(np.float32, copy=False))
        yield t + 1
    return Reconstruction(
        widefield=np.stack(widefield),
        sr=np.stack(sr),
        trust=np.stack(trust) if stream is not None else None,
        method=settings.method,
        reconstructor=str(reconstructor.name),
        provider=str(reconstructor.provider),
        scale=int(reconstructor.scale),
    )


def result_layers(
    source: RawSource, result: Reconstruction, *, side_by_side: bool = True
) -> list[LayerData]:
    """Widefield over the raw frames, SR (and trust over it) beside them or over them."""
    geometry = source.geometry
    offset = geometry.side_offset() if side_by_side else 0.0
    made = {
        "reconstructor": result.reconstructor,
        "provider": result.provider,
        "source": source.stem,
    }
    layers = [
        group_image_layer(result.widefield, geometry, kind="widefield", stem=source.stem),
        group_image_layer(
            result.sr,
            geometry,
            kind="sr",
            stem=source.stem,
            method=result.method,
            factor=result.scale,
            offset_x=offset,
            metadata=made,
        ),
    ]
    if result.trust is not None:
        layers.append(
            group_image_layer(
                result.trust,
                geometry,
                kind="trust",
                stem=source.stem,
                method=result.method,
                factor=result.scale,
                offset_x=offset,
                metadata=made,
            )
        )
    if source.units is not None and any(u != "pixel" for u in source.units):
        for data, kwargs, _ in layers:
            kwargs["units"] = spatial_units(np.ndim(data))
    return layers


def reconstruct_layers(
    source: RawSource, settings: ReconstructSettings, *, side_by_side: bool = True
) -> list[LayerData]:
    """`reconstruct` and `result_layers` in one call, on the calling thread."""
    steps = reconstruct(source, settings)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return result_layers(source, done.value, side_by_side=side_by_side)
