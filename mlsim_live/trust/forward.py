"""The trust map's forward model: the raw frames a reconstruction predicts, band by band.

The reconstruction's spectrum (of the image mirrored beyond its borders) is divided by the
resolution it claims, blurred by the detection OTF and sampled on the camera grid: band 0
(the unmodulated image) and, per angle, the band the pattern ``1 + m cos(2 pi k.r + phi)``
shifts by ``k``. The fit (`mlsim_live.trust.fit`) weighs them into each frame. Per group
the bands are made on the half grid (`forward_half`: every other camera pixel, and the mean of
each 2 x 2 block, from the spectrum folded onto a quarter of the camera bins); the full camera
grid (`forward_bands`) only when the predicted frames are asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from scipy import fft as sfft

from mlsim_live.trust.plan import Band, HalfBand, Plan


@dataclass(frozen=True)
class HalfBands:
    """The forward model's bands on the half grid (every other camera pixel), before gain
    and offset: at the camera pixel (2i, 2j) and as the mean of the 2 x 2 block there."""

    band0: np.ndarray  # (ceil(H/2), ceil(W/2)) float32
    sides: list[np.ndarray]  # per angle, complex64
    band0_block: np.ndarray
    sides_block: list[np.ndarray]


def forward_half(plan: Plan, spec: np.ndarray, workers: int = -1) -> HalfBands:
    """The bands of the frames the reconstruction predicts, on the half grid, with one
    batch of inverse FFTs a quarter of the camera grid's size (the spectrum folded).

    Parameters
    ----------
    plan : Plan
    spec : ndarray
        ``rfft2`` of the padded reconstruction (on the padded 2x grid).
    workers : int
        Threads for scipy.fft.
    """
    ph, pw = plan.spec_shape
    band0, *sides = plan.half_bands
    n = len(sides)
    flat = spec.reshape(-1)
    # band 0 is real at the pixel and as the block mean: both in one transform (the block
    # mean as the imaginary part); then each side at the pixel and as the block mean
    folded = np.zeros((1 + 2 * n, ph // 2, pw // 2), np.complex64)
    packed = folded[0].reshape(-1)
    _fold_into(packed, packed, band0, flat, np.complex64(1j))
    for i, band in enumerate(sides):
        _fold_into(folded[1 + i].reshape(-1), folded[1 + n + i].reshape(-1), band, flat)
    out = sfft.ifft2(folded, axes=(-2, -1), workers=workers, overwrite_x=True)
    index = (slice(None), *plan.crop_half)  # a tuple display: Python 3.10 has no * in [ ]
    out = out[index]
    ramps = [band.ramp for band in sides]
    return HalfBands(
        band0=np.ascontiguousarray(out[0].real, np.float32),
        sides=[z if r is None else z * r for z, r in zip(out[1 : 1 + n], ramps)],
        band0_block=np.ascontiguousarray(out[0].imag, np.float32),
        sides_block=[z if r is None else z * r for z, r in zip(out[1 + n :], ramps)],
    )


def _fold_into(
    point: np.ndarray,
    block: np.ndarray,
    band: HalfBand,
    flat_spec: np.ndarray,
    block_factor: np.complex64 | None = None,
) -> None:
    """Add ``band``'s values to the folded spectra of the pixel and of the block mean (times
    ``block_factor`` when given; one aliasing quadrant at a time, where the targets are
    unique; ``point`` and ``block`` may be the same array)."""
    vals = flat_spec[band.source]
    if band.conj is not None:
        vals.imag *= band.conj
    vp = vals * band.weight
    vals *= band.weight_block
    if block_factor is not None:
        vals *= block_factor
    bounds = (0, *band.splits, vals.size)
    for a, b in pairwise(bounds):
        if b > a:
            t = band.target[a:b]
            point[t] += vp[a:b]
            block[t] += vals[a:b]


def forward_bands(
    plan: Plan, spec: np.ndarray, workers: int = -1
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Band 0 (real, H x W) and each angle's modulated band (complex, H x W) of the frames
    the reconstruction predicts, before gain and offset.

    Parameters
    ----------
    plan : Plan
    spec : ndarray
        ``rfft2`` of the padded reconstruction (on the padded 2x grid).
    workers : int
        Threads for scipy.fft.
    """
    ph, pw = plan.spec_shape
    crop = plan.crop
    flat = spec.reshape(-1)
    half = np.zeros((ph, pw // 2 + 1), np.complex64)
    scatter(half, plan.band0, flat)
    band0 = sfft.irfft2(half, s=(ph, pw), workers=workers)[crop].astype(np.float32)
    sides = []
    for band in plan.sides:
        full = np.zeros((ph, pw), np.complex64)
        scatter(full, band, flat)
        z = sfft.ifft2(full, workers=workers, overwrite_x=True)[crop]
        if band.ramp is not None:
            z = z * band.ramp
        sides.append(z.astype(np.complex64, copy=False))
    return band0, sides


def scatter(out: np.ndarray, band: Band, flat_spec: np.ndarray) -> None:
    """``out.flat[target] += spec[source] * weight`` (conjugated where mirrored)."""
    vals = flat_spec[band.source]
    if band.conj is not None:
        vals.imag *= band.conj
    vals *= band.weight
    dest = out.reshape(-1)
    if band.unique:
        dest[band.target] = vals
    else:
        n = dest.size
        dest += np.bincount(band.target, vals.real, n) + 1j * np.bincount(band.target, vals.imag, n)


__all__ = ["HalfBands", "forward_bands", "forward_half", "scatter"]
