"""The trust map's unsupported band: the local energy of a reconstruction beyond the SIM
passband, which no raw frame can support and the forward residual cannot see."""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft

from mlsim_live.trust.grids import fine_to_half, smooth
from mlsim_live.trust.plan import Plan
from mlsim_live.trust.settings import BAND_SKIP_FRACTION, TrustSettings


def band_ratio(
    plan: Plan, spec: np.ndarray, img: np.ndarray, settings: TrustSettings, workers: int = -1
) -> np.ndarray:
    """Local fraction of the reconstruction's energy beyond the SIM passband (half grid).

    Parameters
    ----------
    plan : Plan
    spec : ndarray
        ``rfft2`` of the padded reconstruction.
    img : ndarray (2H, 2W)
        The reconstruction.
    settings : TrustSettings
    workers : int
        Threads for scipy.fft.
    """
    ph, pw = plan.spec_shape
    base, peak = (float(v) for v in np.percentile(img[::4, ::4], (1.0, 99.9)))
    floor = (settings.band_floor_fraction * max(peak - base, 1e-12)) ** 2
    # Parseval bounds the largest smoothed local energy beyond the passband: when even
    # that is far below what could flag, the image is empty there (Wiener, widefield)
    beyond = spec * plan.out_band
    edges = np.vdot(beyond[:, 0], beyond[:, 0]).real + np.vdot(beyond[:, -1], beyond[:, -1]).real
    total = (2.0 * np.vdot(beyond, beyond).real - edges) / (4 * ph * pw)
    bound = total / 16.0 * plan.kernel_peak
    if bound < BAND_SKIP_FRACTION * settings.band_flag * floor:
        return np.zeros(plan.half_shape, np.float32)
    out = sfft.irfft2(beyond, s=(2 * ph, 2 * pw), workers=workers, overwrite_x=True)
    out = out[plan.crop_fine]
    e_out = smooth(fine_to_half(np.square(out)), plan.sigma_half)
    centred = img - np.float32(base)
    e_all = smooth(fine_to_half(np.square(centred, out=centred)), plan.sigma_half)
    e_all += np.float32(floor)
    e_out /= e_all
    return e_out


__all__ = ["band_ratio"]
