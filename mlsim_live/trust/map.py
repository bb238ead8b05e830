"""Trust map: where a SIM reconstruction is not supported by the raw frames it came from.

Two checks, combined pixel by pixel into one map in [0, 1] (1 = consistent with the data, a
pixel is *flagged* below 0.5):

1. **Forward residual.** The reconstruction (mirrored beyond its borders) is re-imaged
   through the estimated SIM forward model: its spectrum is divided by the resolution it
   claims (by default the SIM OTF of cutoff ``fc + |k|``, the apodization of the Wiener
   reconstruction and the simulator's ground truth), modulated by each angle's pattern
   ``1 + m cos(2 pi k.r + phi)``, blurred by the detection OTF (with the estimate's damping and
   the camera-pixel aperture) and sampled on the camera grid (at every other camera pixel,
   and as the mean of each 2 x 2 block, for the residual statistics). A gain (a robust median over
   tiles, with a gentle gradient for uneven illumination), an offset with a smooth haze field
   (out-of-focus light, which a reconstruction may leave out) and per frame the band-0 weight
   and the modulation's amplitude and phase are fitted by robust weighted least squares. The
   residual against the measured frames, normalized by the expected noise (shot and read noise
   from the judge's photon-transfer fit, `mlsim_live.judge.photons`, the camera's fixed
   pattern, and a model-error floor), gives two statistics smoothed over the PSF scale: the
   reduced chi-square over the 9 frames, and the mean residual of the frames in its own
   standard deviations (sensitive to structure the data lack long before the chi-square).
2. **Unsupported band.** The local energy of the reconstruction beyond the SIM passband (the
   union of the detection passband and its copies shifted by ``+-k`` of each angle), which no
   raw frame can support and the forward residual cannot see, relative to the local energy of
   the whole image.

Everything is numpy and scipy; a `TrustMapper` precomputes what depends only on the frame
shape and the pattern estimate (`mlsim_live.trust.plan`), so a live stream reuses it group
after group. The parts: `settings` (constants and `TrustSettings`), `noise` (the expected
camera noise), `plan`, `forward` (the predicted bands), `fit` (gain, offsets, band weights),
`residual` (chi-square and mean residual), `band` (the unsupported band); this module
combines them into the map and its figures.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import fft as sfft

from mlsim_live.errors import MLSimError
from mlsim_live.recon.estimate import GroupEstimate, as_group, estimate_pattern
from mlsim_live.recon.widefield import upsample2_linear
from mlsim_live.sim.optics import Optics
from mlsim_live.trust.band import band_ratio
from mlsim_live.trust.fit import Fit, fit_forward_model, fit_transfer
from mlsim_live.trust.forward import forward_bands, forward_half
from mlsim_live.trust.grids import half_to_fine, smooth
from mlsim_live.trust.noise import CameraNoise, estimate_noise
from mlsim_live.trust.plan import Plan, make_plan, with_transfer
from mlsim_live.trust.residual import frames_block_mean, residuals
from mlsim_live.trust.settings import CHI2_9_MEDIAN, FLAG_LEVEL, RESOLUTIONS, TrustSettings
from mlsim_live.trust.tasks import Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrustFigures:
    """Per-group figures of a trust map.

    Attributes
    ----------
    flagged_fraction : float
        Fraction of the image (border left out) whose trust is below 0.5.
    residual_flagged_fraction : float
        Fraction flagged by the forward residual alone.
    band_flagged_fraction : float
        Fraction flagged by the unsupported band alone.
    chi_median : float
        Median of the smoothed chi (square root of the reduced chi-square; 1 for pure noise).
    chi_p95 : float
        Its 95th percentile.
    residual_scale : float
        Spread (median absolute deviation) of the PSF-smoothed mean residual of the frames
        over the image, in units of what the noise model allows (about 1 for a reconstruction
        that explains the data; above 2, the image as a whole disagrees with the data). The
        map measures local departures against the larger of this spread and the noise, so
        this figure is the whole image's verdict and the map shows where it is worst.
    gain : float
        Fitted mean gain: raw counts (ADU) per unit of the reconstruction.
    noise_source : str
        Where the expected noise came from (`CameraNoise.source`).
    transfer_band0, transfer_modulated : tuple of float
        The fitted correction of the forward model's transfer in rings of 0.1 of the OTF
        cutoff (first group of a mapper; () when not fitted): above 1 where the data hold
        more contrast than the reconstruction predicts (a blurrier reconstruction, or an
        optics model that falls too fast), below 1 where less.
    """

    flagged_fraction: float
    residual_flagged_fraction: float
    band_flagged_fraction: float
    chi_median: float
    chi_p95: float
    residual_scale: float
    gain: float
    noise_source: str
    transfer_band0: tuple[float, ...] = ()
    transfer_modulated: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {
            "transfer_band0": list(self.transfer_band0),
            "transfer_modulated": list(self.transfer_modulated),
            "flagged_fraction": self.flagged_fraction,
            "residual_flagged_fraction": self.residual_flagged_fraction,
            "band_flagged_fraction": self.band_flagged_fraction,
            "chi_median": self.chi_median,
            "chi_p95": self.chi_p95,
            "residual_scale": self.residual_scale,
            "gain": self.gain,
            "noise_source": self.noise_source,
        }


@dataclass(frozen=True)
class TrustResult:
    """Trust map of one reconstruction and what it was made from.

    Attributes
    ----------
    trust : ndarray (2H, 2W) float32
        In [0, 1] on the reconstruction's grid; 1 = consistent with the raw data.
    chi : ndarray (ceil(H/2), ceil(W/2)) float32
        Smoothed chi (square root of the reduced chi-square; 1 for pure noise) per block of
        2 x 2 camera pixels; `chi_sr` puts it on the reconstruction's grid.
    band_ratio : ndarray (ceil(H/2), ceil(W/2)) float32
        Local fraction of the reconstruction's energy beyond the SIM passband, per block of
        2 x 2 camera pixels.
    figures : TrustFigures
    predict : callable
        Returns the raw frames the reconstruction predicts (after the fit), in ADU, as a
        (9, H, W) float32 array; made on request (see `predicted`).
    """

    trust: np.ndarray
    chi: np.ndarray
    band_ratio: np.ndarray
    figures: TrustFigures
    predict: Callable[[], np.ndarray] = field(repr=False, compare=False)

    def predicted(self) -> np.ndarray:
        """The raw frames the reconstruction predicts, in ADU (9, H, W)."""
        return self.predict()

    @property
    def flagged(self) -> np.ndarray:
        """Boolean map of flagged pixels on the reconstruction's grid."""
        return self.trust < FLAG_LEVEL

    def chi_sr(self) -> np.ndarray:
        """The chi map on the reconstruction's 2x grid."""
        shape = self.trust.shape
        return upsample2_linear(upsample2_linear(self.chi))[: shape[0], : shape[1]]


class TrustMapper:
    """Trust maps of reconstructions against their raw groups, for one pattern estimate.

    Parameters
    ----------
    estimate : GroupEstimate
        Pattern vectors, phases, modulation, OTF cutoff and damping (from
        `WienerReconstructor.estimate` or `mlsim_live.recon.estimate.estimate_pattern`).
    noise : CameraNoise, optional
        The camera's noise; measured on the first group when omitted (and kept).
    settings : TrustSettings, optional
    workers : int
        Threads for scipy.fft.

    Notes
    -----
    Per group (estimate and noise reused): one real FFT of the reconstruction, eight complex
    inverse FFTs on the half grid (a quarter of the camera grid: the spectrum folded) for the
    predicted frames at every other camera pixel and their 2 x 2 block means, one inverse FFT
    on the 2x grid for the unsupported band, a least-squares fit on a subsample of the
    pixels.
    """

    def __init__(
        self,
        estimate: GroupEstimate,
        noise: CameraNoise | None = None,
        settings: TrustSettings | None = None,
        workers: int = -1,
    ) -> None:
        self.estimate = estimate
        self.noise = noise
        self.settings = settings or TrustSettings()
        self.workers = workers
        self.transfer: tuple[np.ndarray, np.ndarray] | None = None
        self._plan: Plan | None = None

    # ----------------------------------------------------------------------------------------
    def compute(self, raw: np.ndarray, sr: np.ndarray) -> TrustResult:
        """Trust map of the reconstruction ``sr`` (2H, 2W) of the raw group ``raw`` (9, H, W).

        Raises
        ------
        MLSimError
            When the shapes do not match the estimate, or the inputs are not finite.
        """
        frames, img = self._checked(raw, sr)
        if self.noise is None:
            self.noise = estimate_noise(frames, self.estimate)
        plan = self._get_plan()
        py0, py1, px0, px1 = plan.pad
        padded = np.pad(img, ((2 * py0, 2 * py1), (2 * px0, 2 * px1)), mode="reflect")
        spec = sfft.rfft2(padded, workers=self.workers, overwrite_x=True)
        # the unsupported band needs only the spectrum (and the frames' block mean only the
        # frames): on a second core while the forward model is fitted (numpy and scipy.fft
        # release the GIL in their loops)
        parallel = self.workers != 1
        band = Task(
            lambda: (
                band_ratio(plan, spec, img, self.settings, 1 if parallel else self.workers),
                frames_block_mean(frames),
            ),
            parallel,
        )
        # one FFT thread while the band's inverse FFT has the other core
        bands = forward_half(plan, spec, 1 if parallel else self.workers)
        fit = fit_forward_model(plan, frames, bands.band0, bands.sides, self.noise, self.settings)
        if self.settings.fit_transfer and self.transfer is None:
            band0, sides = forward_bands(plan, spec, self.workers)
            self.transfer = fit_transfer(plan, frames, band0, sides, fit)
            log.debug(
                "trust transfer correction: band 0 %s, modulated %s",
                np.round(self.transfer[0], 2).tolist(),
                np.round(self.transfer[1], 2).tolist(),
            )
            self._plan = plan = with_transfer(plan, self.transfer)
            bands = forward_half(plan, spec, self.workers)
            fit = fit_forward_model(
                plan, frames, bands.band0, bands.sides, self.noise, self.settings
            )
        ratio, frames_mean = band.result()
        chi2, coherent, signal = residuals(
            plan, frames, bands, fit, self.noise, self.settings, parallel, frames_mean
        )
        return self._combine(plan, fit, (chi2, coherent, signal), ratio, spec)

    __call__ = compute

    # ----------------------------------------------------------------------------------------
    def _checked(self, raw: np.ndarray, sr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The frames (9, H, W, their own type) and the reconstruction (2H, 2W, float32), or
        MLSimError."""
        arr = np.asarray(raw)
        if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
            raise MLSimError(f"raw frames are of type {arr.dtype}; expected real camera counts")
        frames = as_group(arr, arr.dtype.type)  # the shape checked, the counts as they are
        h, w = frames.shape[1:]
        if (h, w) != tuple(self.estimate.shape):
            raise MLSimError(
                f"raw frames are {h} x {w} but the pattern estimate is for "
                f"{self.estimate.shape[0]} x {self.estimate.shape[1]}; expected the same size"
            )
        img = np.asarray(sr)
        if img.shape != (2 * h, 2 * w):
            raise MLSimError(
                f"reconstruction has shape {img.shape}; expected ({2 * h}, {2 * w}), the 2x grid "
                f"of the {h} x {w} raw frames"
            )
        img = img.astype(np.float32, copy=False)
        # a sum is NaN or Inf when any value is (one pass, no boolean array); integer camera
        # counts are finite
        raw_finite = np.issubdtype(frames.dtype, np.integer) or np.isfinite(
            frames.sum(dtype=np.float64)
        )
        if not (raw_finite and np.isfinite(img.sum(dtype=np.float64))):
            raise MLSimError("reconstruction or raw frames hold NaN or Inf; expected finite values")
        return frames, img

    def _combine(
        self,
        plan: Plan,
        fit: Fit,
        resid: tuple[np.ndarray, tuple[np.ndarray, float], np.ndarray],
        ratio: np.ndarray,
        spec: np.ndarray,
    ) -> TrustResult:
        """The map and its figures from the residual statistics and the band ratio."""
        chi2, (z, residual_scale), signal = resid
        # where the reconstruction predicts little light, the residual is noise alone: a
        # camera whose noise exceeds the model there (correlated noise, a processed file) has
        # its chi-square scaled down to match, never up
        inner = plan.half_interior
        dark = signal[inner] <= np.median(signal[inner])
        noise_scale = max(1.0, float(np.median(chi2[inner][dark])) / CHI2_9_MEDIAN)
        if noise_scale > 1.0:
            chi2 /= np.float32(noise_scale)
        # smoothed maps on a grid of 2 x 2 camera pixels (they are smooth on the PSF scale),
        # brought back to the reconstruction's grid at the end
        chi2_s = smooth(chi2, plan.sigma_half)
        s = self.settings
        excess = np.maximum(chi2_s - 1.0, 0.0) / (s.chi2_flag - 1.0)
        t_res = np.exp2(-(excess**2) - (z / s.z_flag) ** 2)
        t_band = np.exp2(-((ratio / s.band_flag) ** 2))
        trust_half = (t_res * t_band).astype(np.float32)
        # the map onto the 2x grid (linear interpolation keeps it within [0, 1]) on a second
        # core while the figures are made
        fine = Task(
            lambda: half_to_fine(trust_half, (2 * plan.shape[0], 2 * plan.shape[1])),
            self.workers != 1,
        )
        chi_half = np.sqrt(chi2_s).astype(np.float32)
        assert self.noise is not None
        chi_median, chi_p95 = np.percentile(chi_half[inner], (50.0, 95.0))
        figures = TrustFigures(
            flagged_fraction=float(np.mean(trust_half[inner] < FLAG_LEVEL)),
            residual_flagged_fraction=float(np.mean(t_res[inner] < FLAG_LEVEL)),
            band_flagged_fraction=float(np.mean(t_band[inner] < FLAG_LEVEL)),
            chi_median=float(chi_median),
            chi_p95=float(chi_p95),
            residual_scale=float(residual_scale),
            gain=float(fit.gain),
            noise_source=self.noise.source,
            transfer_band0=_rounded(self.transfer[0] if self.transfer else None),
            transfer_modulated=_rounded(self.transfer[1] if self.transfer else None),
        )
        trust = fine.result()
        workers = self.workers

        def predict() -> np.ndarray:
            # the camera grid's bands, made only on request
            band0, sides = forward_bands(plan, spec, workers)
            return fit.predicted(plan, band0, sides)

        return TrustResult(
            trust=trust,
            chi=chi_half,
            band_ratio=ratio.astype(np.float32),
            figures=figures,
            predict=predict,
        )

    def _get_plan(self) -> Plan:
        if self._plan is None:
            self._plan = make_plan(self.estimate, self.settings)
        return self._plan


def _rounded(values: np.ndarray | None) -> tuple[float, ...]:
    return () if values is None else tuple(round(float(v), 3) for v in values)


# --------------------------------------------------------------------------------------------
# One-call API
# --------------------------------------------------------------------------------------------


def trust_map(
    raw: np.ndarray,
    sr: np.ndarray,
    *,
    estimate: GroupEstimate | None = None,
    optics: Optics | None = None,
    noise: CameraNoise | None = None,
    settings: TrustSettings | None = None,
) -> TrustResult:
    """Trust map of one reconstruction against its raw group.

    Parameters
    ----------
    raw : ndarray (9, H, W)
        Raw frames, angle-major, camera counts.
    sr : ndarray (2H, 2W)
        The reconstruction on the 2x grid (any method, any units).
    estimate : GroupEstimate, optional
        The pattern estimate; made from ``raw`` (with ``optics``) when omitted.
    optics : Optics, optional
        NA, wavelength and pixel size for the estimate.
    noise : CameraNoise, optional
        The camera noise; fitted on ``raw`` when omitted.
    settings : TrustSettings, optional

    Returns
    -------
    TrustResult
    """
    if estimate is None:
        estimate = estimate_pattern(raw, optics)
    return TrustMapper(estimate, noise=noise, settings=settings).compute(raw, sr)


__all__ = [
    "FLAG_LEVEL",
    "RESOLUTIONS",
    "CameraNoise",
    "TrustFigures",
    "TrustMapper",
    "TrustResult",
    "TrustSettings",
    "estimate_noise",
    "trust_map",
]
