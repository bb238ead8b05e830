"""The trust map's forward model: the raw frames a reconstruction predicts, band by band.

The reconstruction's spectrum (of the image mirrored beyond its borders) is divided by the
resolution it claims, blurred by the detection OTF and sampled on the camera grid: band 0
(the unmodulated image) and, per angle, the band the pattern ``1 + m cos(2 pi k.r + phi)``
shifts by ``k``. The fit (`mlsim_live.trust.fit`) weighs them into each frame.
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft

from mlsim_live.trust.plan import Band, Plan


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


__all__ = ["forward_bands", "scatter"]
