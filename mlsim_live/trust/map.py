"""Trust map: where a SIM reconstruction is not supported by the raw frames it came from.

Two checks, combined pixel by pixel into one map in [0, 1] (1 = consistent with the data, a
pixel is *flagged* below 0.5):

1. **Forward residual.** The reconstruction (mirrored beyond its borders) is re-imaged
   through the estimated SIM forward model: its spectrum is divided by the resolution it
   claims (by default the SIM OTF of cutoff ``fc + |k|``, the apodization of the Wiener
   reconstruction and the simulator's ground truth), modulated by each angle's pattern
   ``1 + m cos(2 pi k.r + phi)``, blurred by the detection OTF (with the estimate's damping and
   the camera-pixel aperture) and sampled on the camera grid. A gain (a robust median over
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
shape and the pattern estimate, so a live stream reuses it group after group.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from mlsim_live.errors import MLSimError
from mlsim_live.recon.base import GROUP_SIZE, N_ANGLES, N_PHASES
from mlsim_live.recon.estimate import GroupEstimate, as_group, estimate_pattern
from mlsim_live.recon.widefield import upsample2_linear
from mlsim_live.sim.optics import Optics, incoherent_otf

log = logging.getLogger(__name__)

Resolution = Literal["sim", "widefield"]
RESOLUTIONS = ("sim", "widefield")

#: Trust below this flags a pixel.
FLAG_LEVEL = 0.5
#: Regularization of the division by the reconstruction's claimed OTF.
CLAIMED_OTF_EPS = 0.02
#: Modulation assumed where the estimate could not measure it.
DEFAULT_MODULATION = 0.5
#: Rings (of 0.1 cutoff) and range of the fitted transfer correction.
TRANSFER_RINGS = 10
TRANSFER_RANGE = (1.0 / 3.0, 3.0)
#: Noise is measured beyond this multiple of the cutoff.
NOISE_REGION_FRACTION = 1.1
#: Median of a chi-square with 9 degrees of freedom, over 9.
CHI2_9_MEDIAN = 0.9269
#: The reconstruction is mirrored beyond its borders by this many PSF radii.
PAD_PSF_RADII = 3.0
#: Smoothing kernels are cut at this many standard deviations.
SMOOTH_TRUNCATE = 3.0
#: The band check is skipped when no local energy beyond the passband can reach this
#: fraction of what flags.
BAND_SKIP_FRACTION = 0.01
#: Pixels used per frame for the gain/offset fit (a regular subsample).
FIT_PIXELS_PER_FRAME = 4096
#: Tukey biweight cut-off, in standard deviations, of the final rounds.
TUKEY_SIGMAS = 6.0
#: Tiles of the robust gain fit, in PSF widths (FWHM).
GAIN_TILE_PSF_FWHM = 8.0
#: Tiles count for the gain's median when their gain is measured to this signal-to-noise.
GAIN_TILE_MIN_SNR = 5.0
#: The gain field stays within these multiples of its mean.
GAIN_FIELD_RANGE = (0.7, 1.3)
#: Tiles whose gain differs from the median by this fraction or more are left out of it.
GAIN_TILE_TOLERANCE = 0.35


@dataclass(frozen=True)
class TrustSettings:
    """How residual and band are turned into trust.

    Attributes
    ----------
    chi2_flag : float
        Smoothed reduced chi-square at which the residual's trust is 0.5 (pure noise gives 1
        with a spread of about ``sqrt(2 / (9 * 4 pi sigma^2))``, ~0.15 at 1 px).
    z_flag : float
        Size, in standard deviations, of the PSF-smoothed mean residual of the 9 frames at
        which the residual's trust is 0.5 (structure the data lack, or light the
        reconstruction lacks, shows up there long before it lifts the chi-square).
    band_flag : float
        Fraction of the local energy beyond the SIM passband at which the band's trust is 0.5.
    model_error_fraction : float
        Relative error of the forward model (pattern estimate, OTF model), added to the noise
        as ``(fraction * signal)^2``: without it any bright structure fails at high photon
        counts.
    smoothing_psf_sigmas : float
        Width of the smoothing of chi-square and band energy, in PSF standard deviations
        (``0.21 lambda / NA``).
    passband_margin : float
        Radius of each passband disk, as a multiple of the OTF cutoff.
    band_floor_fraction : float
        Band energy is measured against ``(this * peak)^2`` at least, so noise-level speckle
        in an empty background does not count.
    resolution : {"sim", "widefield"}
        What the reconstruction claims to show: the sample through the SIM OTF of cutoff
        ``fc + |k|`` (every SIM method here, the simulator's ground truth), or through the
        widefield OTF (a widefield image).
    gain_degree : int
        Polynomial degree of the smooth gain field (uneven illumination; kept within 0.7-1.3
        times the mean gain); 0: one gain.
    haze_psf_sigmas : float
        Width of the smooth offset field (out-of-focus haze, which a reconstruction may leave
        out), in PSF standard deviations; 0: one offset.
    fit_transfer : bool
        On the first group, fit a correction of the forward model's transfer in rings of
        spatial frequency (band 0 and the modulated bands apart), for how real optics and a
        reconstruction's effective resolution differ from the models; kept for later groups.
        Off by default: it forgives a reconstruction that is blurrier than the data support,
        and on held-out simulations the map then tracked the true error less well.
    robust_iterations : int
        Rounds of the alternating robust fit.
    border_px : int or None
        Camera pixels at the image border left out of the fit and the figures (the forward
        model wraps around the border); None: two PSF radii.
    """

    chi2_flag: float = 5.0
    z_flag: float = 4.0
    band_flag: float = 0.05
    model_error_fraction: float = 0.05
    smoothing_psf_sigmas: float = 1.5
    passband_margin: float = 1.05
    band_floor_fraction: float = 0.05
    resolution: Resolution = "sim"
    gain_degree: int = 1
    haze_psf_sigmas: float = 10.0
    fit_transfer: bool = False
    robust_iterations: int = 3
    border_px: int | None = None

    def __post_init__(self) -> None:
        if not self.chi2_flag > 1.0:
            raise MLSimError(f"chi2_flag {self.chi2_flag}; expected a number above 1")
        if not self.band_flag > 0:
            raise MLSimError(f"band_flag {self.band_flag}; expected a positive fraction")
        if self.resolution not in RESOLUTIONS:
            raise MLSimError(
                f"resolution {self.resolution!r} is unknown; expected one of "
                f"{', '.join(RESOLUTIONS)}"
            )
        if not 0 <= self.gain_degree <= 4:
            raise MLSimError(f"gain degree {self.gain_degree}; expected 0 to 4")
        if not self.haze_psf_sigmas >= 0:
            raise MLSimError(f"haze width {self.haze_psf_sigmas}; expected 0 or more PSF sigmas")


@dataclass(frozen=True)
class CameraNoise:
    """Expected noise variance of each raw frame, in ADU^2, as a function of its level.

    ``var = gain_f * max(level - offset_f, 0) + floor``: the photon-transfer line (its
    intercept holds the read noise, see `mlsim_live.judge.photons`) plus the camera's fixed
    pattern and the quantization.

    Attributes
    ----------
    gain_adu_per_photon : tuple of float
        Per frame (9).
    offset_adu : tuple of float
        Per frame (9): the level where the photon-transfer line reaches zero variance.
    floor_adu2 : float
        Variance added everywhere (fixed pattern and quantization).
    fixed_pattern_adu2 : float
        The part of it that is the camera's fixed pattern, the same in all 9 frames.
    source : str
        ``"photon transfer"``, ``"given"`` or ``"constant"`` (no photon-transfer fit: one
        variance for all levels).
    """

    gain_adu_per_photon: tuple[float, ...]
    offset_adu: tuple[float, ...]
    floor_adu2: float
    source: str
    fixed_pattern_adu2: float = 0.0

    @classmethod
    def from_calibration(cls, calibration: Any) -> CameraNoise:
        """From a `mlsim_live.judge.photons.PhotonCalibration`."""
        if calibration.per_angle:
            gains = np.repeat(calibration.gain_per_angle_adu_per_photon, N_PHASES)
            offsets = np.repeat(calibration.offset_per_angle_adu, N_PHASES)
        else:
            gains = np.full(GROUP_SIZE, calibration.gain_adu_per_photon)
            offsets = np.full(GROUP_SIZE, calibration.offset_adu)
        fixed = calibration.fixed_pattern_photons * calibration.gain_adu_per_photon
        fixed2 = float(fixed) ** 2 if np.isfinite(fixed) else 0.0
        return cls(
            gain_adu_per_photon=tuple(float(g) for g in gains),
            offset_adu=tuple(float(o) for o in offsets),
            floor_adu2=fixed2 + 1.0 / 12.0,
            source=str(calibration.source),
            fixed_pattern_adu2=fixed2,
        )

    @classmethod
    def constant(cls, std_adu: float) -> CameraNoise:
        """One noise level for every pixel (when the photon transfer cannot be fitted)."""
        return cls(
            gain_adu_per_photon=(0.0,) * GROUP_SIZE,
            offset_adu=(0.0,) * GROUP_SIZE,
            floor_adu2=float(std_adu) ** 2 + 1.0 / 12.0,
            source="constant",
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {
            "gain_adu_per_photon": list(self.gain_adu_per_photon),
            "offset_adu": list(self.offset_adu),
            "floor_adu2": self.floor_adu2,
            "fixed_pattern_adu2": self.fixed_pattern_adu2,
            "source": self.source,
        }


def estimate_noise(group: np.ndarray, estimate: GroupEstimate) -> CameraNoise:
    """The camera noise of a raw group: the judge's photon-transfer fit, or when that fails
    (too little signal range) the estimate's spectral noise floor as one constant level."""
    from mlsim_live.judge.photons import estimate_photon_calibration

    try:
        calib = estimate_photon_calibration(group, estimate.cutoff_cycles_per_px)
    except MLSimError as exc:
        std = estimate.noise_adu
        if std is None or not std > 0:
            frames = as_group(group, np.float64)
            std = float(np.std(frames - frames.mean(axis=0)) * np.sqrt(N_PHASES / 2.0))
        log.warning("camera noise fit failed (%s); using one noise level of %.3g ADU", exc, std)
        return CameraNoise.constant(std)
    log.debug("trust noise model: %s", calib.describe())
    return CameraNoise.from_calibration(calib)


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


@dataclass(frozen=True)
class _Band:
    """Where one band of the forward model takes its values from and puts them."""

    source: np.ndarray  # flat indices into the reconstruction's rfft2 half spectrum
    conj: np.ndarray | None  # float32 +-1: sign of the imaginary part (conjugate mirror)
    weight: np.ndarray  # complex64 transfer per used bin
    target: np.ndarray  # flat indices into the camera spectrum
    radius: np.ndarray  # float32 |f| / cutoff of the camera frequency per used bin
    unique: bool  # targets unique (no aliasing): plain assignment instead of bincount
    ramp: np.ndarray | None  # (H, W) complex64: exp(2 pi i dk.r), the sub-bin part of k


@dataclass
class _Plan:
    shape: tuple[int, int]  # camera frames
    spec_shape: tuple[int, int]  # the padded camera grid of the forward model
    pad: tuple[int, int, int, int]  # camera pixels before/after in y, before/after in x
    crop: tuple[slice, slice]  # the frames within the padded camera grid
    crop_fine: tuple[slice, slice]  # the reconstruction within the padded 2x grid
    band0: _Band
    sides: tuple[_Band, ...]
    out_band: np.ndarray  # (2H, W+1) float32 mask beyond the SIM passband
    cutoff: float
    sigma_px: float
    kernel_sq: float  # variance of a smoothed white unit-variance camera-grid map
    kernel_peak: float  # largest weight of the smoothing kernel on the half grid
    sigma_half: float  # smoothing on the grid of 2 x 2 camera pixels, in its pixels
    half_shape: tuple[int, int]
    half_interior: tuple[slice, slice]
    border_px: int
    fit_index: tuple[np.ndarray, np.ndarray]
    basis_fit: np.ndarray  # (n_basis, n_fit)
    basis_y: np.ndarray  # (n_y, H) polynomial factors
    basis_x: np.ndarray
    gain_powers: tuple[tuple[int, int], ...]
    fit_shape: tuple[int, int]
    tile_steps: int  # subsample steps per tile of the robust gain
    haze_sigma: float  # smoothing of the offset field, in subsample steps
    interp_y: np.ndarray  # (H, ny): linear interpolation from the subsample grid
    interp_x: np.ndarray  # (W, nx)
    init_coef: np.ndarray  # (9, 3): band-0 weight, Re and Im weights per frame
    interior: np.ndarray  # (H, W) bool
    cache: dict[str, Any] = field(default_factory=dict)


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
    Per group (estimate and noise reused): one real FFT of the reconstruction, three complex
    and one real inverse FFT on the camera grid for the predicted frames, one inverse FFT on
    the 2x grid for the unsupported band, a least-squares fit on a subsample of the pixels.
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
        self._plan: _Plan | None = None

    # ----------------------------------------------------------------------------------------
    def compute(self, raw: np.ndarray, sr: np.ndarray) -> TrustResult:
        """Trust map of the reconstruction ``sr`` (2H, 2W) of the raw group ``raw`` (9, H, W).

        Raises
        ------
        MLSimError
            When the shapes do not match the estimate, or the inputs are not finite.
        """
        frames = as_group(raw, np.float32)
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
        # a sum is NaN or Inf when any value is (one pass, no boolean array)
        if not (
            np.isfinite(img.sum(dtype=np.float64)) and np.isfinite(frames.sum(dtype=np.float64))
        ):
            raise MLSimError("reconstruction or raw frames hold NaN or Inf; expected finite values")
        if self.noise is None:
            self.noise = estimate_noise(frames, self.estimate)
        plan = self._get_plan()
        py0, py1, px0, px1 = plan.pad
        padded = np.pad(img, ((2 * py0, 2 * py1), (2 * px0, 2 * px1)), mode="reflect")
        spec = sfft.rfft2(padded, workers=self.workers)
        band0, sides = self._forward(plan, spec)
        fit = _fit(plan, frames, band0, sides, self.noise, self.settings)
        if self.settings.fit_transfer and self.transfer is None:
            self.transfer = _fit_transfer(plan, frames, band0, sides, fit)
            log.debug(
                "trust transfer correction: band 0 %s, modulated %s",
                np.round(self.transfer[0], 2).tolist(),
                np.round(self.transfer[1], 2).tolist(),
            )
            self._plan = plan = _with_transfer(plan, self.transfer)
            band0, sides = self._forward(plan, spec)
            fit = _fit(plan, frames, band0, sides, self.noise, self.settings)
        chi2, mean_z, signal = _residuals(
            plan, frames, band0, sides, fit, self.noise, self.settings
        )
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
        chi2_s = _smooth(chi2, plan.sigma_half)
        z, residual_scale = _coherent_z(plan, _to_half(mean_z))
        ratio = self._band_ratio(plan, spec, img)
        s = self.settings
        excess = np.maximum(chi2_s - 1.0, 0.0) / (s.chi2_flag - 1.0)
        t_res = np.exp2(-(excess**2) - (z / s.z_flag) ** 2)
        t_band = np.exp2(-((ratio / s.band_flag) ** 2))
        trust_half = (t_res * t_band).astype(np.float32)
        chi_half = np.sqrt(chi2_s).astype(np.float32)
        inner = plan.half_interior
        figures = TrustFigures(
            flagged_fraction=float(np.mean(trust_half[inner] < FLAG_LEVEL)),
            residual_flagged_fraction=float(np.mean(t_res[inner] < FLAG_LEVEL)),
            band_flagged_fraction=float(np.mean(t_band[inner] < FLAG_LEVEL)),
            chi_median=float(np.median(chi_half[inner])),
            chi_p95=float(np.percentile(chi_half[inner], 95)),
            residual_scale=float(residual_scale),
            gain=float(fit.gain),
            noise_source=self.noise.source,
            transfer_band0=_rounded(self.transfer[0] if self.transfer else None),
            transfer_modulated=_rounded(self.transfer[1] if self.transfer else None),
        )
        trust_cam = _from_half(trust_half, plan.shape)
        trust = np.clip(upsample2_linear(trust_cam), 0.0, 1.0).astype(np.float32)
        return TrustResult(
            trust=trust,
            chi=chi_half,
            band_ratio=ratio.astype(np.float32),
            figures=figures,
            predict=lambda: fit.predicted(plan, band0, sides),
        )

    __call__ = compute

    # ----------------------------------------------------------------------------------------
    def _get_plan(self) -> _Plan:
        if self._plan is None:
            self._plan = _make_plan(self.estimate, self.settings)
        return self._plan

    def _forward(self, plan: _Plan, spec: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Band 0 (real, H x W) and each angle's modulated band (complex, H x W) of the
        frames the reconstruction predicts, before gain and offset."""
        ph, pw = plan.spec_shape
        crop = plan.crop
        flat = spec.reshape(-1)
        half = np.zeros((ph, pw // 2 + 1), np.complex64)
        _scatter(half, plan.band0, flat)
        band0 = sfft.irfft2(half, s=(ph, pw), workers=self.workers)[crop].astype(np.float32)
        sides = []
        for band in plan.sides:
            full = np.zeros((ph, pw), np.complex64)
            _scatter(full, band, flat)
            z = sfft.ifft2(full, workers=self.workers, overwrite_x=True)[crop]
            if band.ramp is not None:
                z = z * band.ramp
            sides.append(z.astype(np.complex64, copy=False))
        return band0, sides

    def _band_ratio(self, plan: _Plan, spec: np.ndarray, img: np.ndarray) -> np.ndarray:
        """Local fraction of the reconstruction's energy beyond the SIM passband (camera
        grid)."""
        ph, pw = plan.spec_shape
        sparse = img[::4, ::4]
        base, peak = (float(v) for v in np.percentile(sparse, (1.0, 99.9)))
        floor = (self.settings.band_floor_fraction * max(peak - base, 1e-12)) ** 2
        # Parseval bounds the largest smoothed local energy beyond the passband: when even
        # that is far below what could flag, the image is empty there (Wiener, widefield)
        beyond = spec * plan.out_band
        power = np.abs(beyond) ** 2
        total = (2.0 * power.sum() - power[:, 0].sum() - power[:, -1].sum()) / (4 * ph * pw)
        bound = total / 16.0 * plan.kernel_peak
        if bound < BAND_SKIP_FRACTION * self.settings.band_flag * floor:
            return np.zeros(plan.half_shape, np.float32)
        out = sfft.irfft2(beyond, s=(2 * ph, 2 * pw), workers=self.workers)[plan.crop_fine]
        e_out = _to_half(_block_mean2(out * out))
        centred = img - np.float32(base)
        e_all = _to_half(_block_mean2(centred * centred))
        e_out = _smooth(e_out, plan.sigma_half)
        e_all = _smooth(e_all, plan.sigma_half)
        return e_out / (e_all + np.float32(floor))


# --------------------------------------------------------------------------------------------
# Plan: everything that depends only on the shape and the pattern estimate
# --------------------------------------------------------------------------------------------


def _make_plan(est: GroupEstimate, settings: TrustSettings) -> _Plan:
    shape = est.shape
    fc = est.cutoff_cycles_per_px
    ks = [p.k_cycles_per_px for p in est.patterns]
    k_max = max(float(np.hypot(*k)) for k in ks)
    damping = est.otf_damping
    # the reconstruction is mirrored beyond its borders (and the spectra sized for a fast
    # FFT), so the blur near a border sees a continuation, not the opposite side
    pad = int(np.ceil(PAD_PSF_RADII * 1.22 / fc))
    h, w = (int(sfft.next_fast_len(n + 2 * pad)) for n in shape)

    # every bin of the 2x grid's spectrum, in cycles per camera pixel (signed bin numbers)
    by = np.fft.fftfreq(2 * h, 1.0 / (2 * h)).astype(int)[:, None]
    bx = np.fft.fftfreq(2 * w, 1.0 / (2 * w)).astype(int)[None, :]
    by, bx = np.broadcast_arrays(by, bx)
    fy, fx = by / h, bx / w
    inside = np.hypot(fy, fx) < fc
    by, bx = by[inside], bx[inside]

    def claimed_inverse(gy: np.ndarray, gx: np.ndarray) -> np.ndarray:
        """Regularized inverse of the OTF the reconstruction claims, at frequency g."""
        rho = np.hypot(gy, gx)
        if settings.resolution == "sim":
            a = incoherent_otf(rho / (fc + k_max))
        else:
            a = _detection_otf(gy, gx, fc, damping)
        return a / (a * a + CLAIMED_OTF_EPS**2)

    def make_band(k_bins: tuple[int, int], dk: tuple[float, float], full: bool) -> _Band:
        gby, gbx = by - k_bins[0], bx - k_bins[1]
        ok = (gby >= -h) & (gby < h) & (gbx >= -w) & (gbx <= w)
        sy, sx, gby, gbx = by[ok], bx[ok], gby[ok], gbx[ok]
        gy, gx = gby / h, gbx / w
        # camera frequency of this content: f = g + k
        f_y, f_x = sy / h + dk[0], sx / w + dk[1]
        transfer = _detection_otf(f_y, f_x, fc, damping) * claimed_inverse(gy, gx)
        # the 2x grid's pixel centres sit at camera coordinates j/2 - 1/4
        weight = 0.25 * transfer * np.exp(2j * np.pi * 0.25 * (gy + gx))
        mirror = gbx < 0
        src_y = np.where(mirror, -gby, gby) % (2 * h)
        src_x = np.where(mirror, -gbx, gbx)
        source = src_y * (w + 1) + src_x
        conj = np.where(mirror, -1.0, 1.0).astype(np.float32)
        ty, tx = sy % h, sx % w
        if full:
            target = ty * w + tx
        else:
            keep = tx <= w // 2
            source, conj, weight, ty, tx = (
                source[keep],
                conj[keep],
                weight[keep],
                ty[keep],
                tx[keep],
            )
            target = ty * (w // 2 + 1) + tx
        radius = np.hypot(f_y, f_x) / fc
        if not full:
            radius = radius[keep]
        used = np.abs(weight) > 0
        source, conj, weight, target = source[used], conj[used], weight[used], target[used]
        radius = radius[used]
        unique = np.unique(target).size == target.size
        ramp = None
        if full and (dk[0] != 0.0 or dk[1] != 0.0):
            yy = np.arange(h)[:, None]
            xx = np.arange(w)[None, :]
            ramp = np.exp(2j * np.pi * (dk[0] * yy + dk[1] * xx)).astype(np.complex64)
        return _Band(
            source=source.astype(np.intp),
            conj=conj if np.any(conj < 0) else None,
            weight=weight.astype(np.complex64),
            target=target.astype(np.intp),
            radius=radius.astype(np.float32),
            unique=bool(unique),
            ramp=ramp,
        )

    band0 = make_band((0, 0), (0.0, 0.0), full=False)
    sides = []
    for ky, kx in ks:
        k_bins = (round(ky * h), round(kx * w))
        dk = (ky - k_bins[0] / h, kx - k_bins[1] / w)
        sides.append(make_band(k_bins, dk, full=True))
    crop = (slice(pad, pad + shape[0]), slice(pad, pad + shape[1]))
    sides = [
        replace(b, ramp=np.ascontiguousarray(b.ramp[crop])) if b.ramp is not None else b
        for b in sides
    ]
    spec_shape = (h, w)
    h, w = shape

    # beyond the SIM passband, on the 2x grid's half spectrum
    gy = np.fft.fftfreq(2 * spec_shape[0], 0.5)[:, None]
    gx = np.fft.rfftfreq(2 * spec_shape[1], 0.5)[None, :]
    radius = settings.passband_margin * fc
    supported = np.hypot(gy, gx) <= radius
    for ky, kx in ks:
        for sign in (1.0, -1.0):
            supported |= np.hypot(gy - sign * ky, gx - sign * kx) <= radius
    out_band = (~supported).astype(np.float32)

    # PSF standard deviation 0.21 lambda / NA = 0.42 / fc camera pixels
    sigma_psf = 0.42 / fc
    sigma_px = float(settings.smoothing_psf_sigmas * sigma_psf)
    # the 2 x 2 block mean blurs by 1/12 of a half-grid pixel squared per axis
    sigma_half = float(np.sqrt(max(sigma_px**2 / 4.0 - 1.0 / 12.0, 0.05)))
    border = (
        int(settings.border_px) if settings.border_px is not None else int(np.ceil(2.0 * 1.22 / fc))
    )
    border = min(border, (min(h, w) - 8) // 2)
    interior = np.zeros((h, w), bool)
    interior[border : h - border, border : w - border] = True

    step = max(1, int(np.sqrt((h - 2 * border) * (w - 2 * border) / FIT_PIXELS_PER_FRAME)))
    iy = np.arange(border, h - border, step)
    ix = np.arange(border, w - border, step)
    fit_index = (np.repeat(iy, ix.size), np.tile(ix, iy.size))
    deg = settings.gain_degree
    # by total degree, so that each field's terms are a prefix
    powers = tuple((i, d - i) for d in range(deg + 1) for i in range(d + 1))
    yn = np.linspace(-1.0, 1.0, h)
    xn = np.linspace(-1.0, 1.0, w)
    basis_y = np.stack([yn**i for i in range(deg + 1)]).astype(np.float32)
    basis_x = np.stack([xn**j for j in range(deg + 1)]).astype(np.float32)
    basis_fit = np.stack([yn[fit_index[0]] ** i * xn[fit_index[1]] ** j for i, j in powers])

    init = np.zeros((GROUP_SIZE, 3))
    for a, p in enumerate(est.patterns):
        m = p.modulation if np.isfinite(p.modulation) else DEFAULT_MODULATION
        for q, phi in enumerate(p.phases_rad):
            # the pattern's phase at the padded grid's origin
            phi = phi - 2.0 * np.pi * (p.k_cycles_per_px[0] + p.k_cycles_per_px[1]) * pad
            init[N_PHASES * a + q] = (1.0, m * np.cos(phi), -m * np.sin(phi))
    return _Plan(
        shape=(h, w),
        spec_shape=spec_shape,
        pad=(pad, spec_shape[0] - h - pad, pad, spec_shape[1] - w - pad),
        crop=crop,
        crop_fine=(slice(2 * pad, 2 * (pad + h)), slice(2 * pad, 2 * (pad + w))),
        band0=band0,
        sides=tuple(sides),
        out_band=out_band,
        cutoff=fc,
        sigma_px=sigma_px,
        # a block mean of 4 independent pixels, then the kernel
        kernel_sq=0.25 * float((_kernel(sigma_half) ** 2).sum() ** 2),
        kernel_peak=float(_kernel(sigma_half).max() ** 2),
        sigma_half=sigma_half,
        half_shape=((h + 1) // 2, (w + 1) // 2),
        half_interior=(
            slice(border // 2, (h - border) // 2),
            slice(border // 2, (w - border) // 2),
        ),
        border_px=border,
        fit_index=fit_index,
        basis_fit=basis_fit,
        basis_y=basis_y,
        basis_x=basis_x,
        gain_powers=powers[: (settings.gain_degree + 1) * (settings.gain_degree + 2) // 2],
        fit_shape=(iy.size, ix.size),
        tile_steps=max(2, round(GAIN_TILE_PSF_FWHM * 1.02 / fc / step)),
        haze_sigma=float(settings.haze_psf_sigmas * sigma_psf / step)
        if settings.haze_psf_sigmas > 0
        else 1e6,
        interp_y=_interp_matrix(iy, h),
        interp_x=_interp_matrix(ix, w),
        init_coef=init,
        interior=interior,
    )


def _kernel(sigma_px: float) -> np.ndarray:
    """The 1D kernel of `_smooth`."""
    delta = np.zeros(int(8 * sigma_px) | 1, np.float64)
    delta[delta.size // 2] = 1.0
    return ndimage.gaussian_filter1d(delta, sigma_px, mode="constant", truncate=SMOOTH_TRUNCATE)


def _interp_matrix(nodes: np.ndarray, n: int) -> np.ndarray:
    """(n, len(nodes)) matrix of linear interpolation from ``nodes`` onto 0..n-1 (held
    constant beyond the ends)."""
    eye = np.eye(nodes.size)
    return np.stack([np.interp(np.arange(n), nodes, row) for row in eye], axis=1).astype(np.float32)


def _detection_otf(fy: np.ndarray, fx: np.ndarray, fc: float, damping: float) -> np.ndarray:
    """Detection OTF with the estimate's damping and the camera-pixel aperture."""
    rho = np.hypot(fy, fx) / fc
    otf = incoherent_otf(rho)
    if damping != 1.0:
        otf = otf * np.power(damping, np.minimum(rho, 1.0))
    return otf * np.sinc(fy) * np.sinc(fx)


def _scatter(out: np.ndarray, band: _Band, flat_spec: np.ndarray) -> None:
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


def _block_mean2(img: np.ndarray) -> np.ndarray:
    """Mean of 2x2 blocks: the 2x grid onto the camera grid."""
    out = img[0::2, 0::2] + img[1::2, 0::2]
    out += img[0::2, 1::2]
    out += img[1::2, 1::2]
    out *= np.float32(0.25)
    return out.astype(np.float32, copy=False)


def _to_half(img: np.ndarray) -> np.ndarray:
    """Mean of 2x2 blocks of a camera-grid map (an odd size repeats its last row/column)."""
    h, w = img.shape
    if h % 2 or w % 2:
        img = np.pad(img, ((0, h % 2), (0, w % 2)), mode="edge")
    return _block_mean2(img)


def _from_half(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A half-grid map back on the camera grid (linear interpolation)."""
    return upsample2_linear(img)[: shape[0], : shape[1]]


def _smooth(img: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian smoothing over the PSF scale (kernel cut at 3 sigma)."""
    return ndimage.gaussian_filter(img, sigma_px, mode="nearest", truncate=SMOOTH_TRUNCATE)


# --------------------------------------------------------------------------------------------
# The fit: smooth gain and offset fields, per-frame band weights
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fit:
    gain_coef: np.ndarray  # (n_gain,) polynomial gain field
    offset_adu: float  # constant offset
    haze: np.ndarray  # (ny, nx) smooth offset field on the fit's subsample grid
    frame_offset: np.ndarray  # (9,)
    coef: np.ndarray  # (9, 3)

    def gain_field(self, plan: _Plan) -> np.ndarray:
        g = np.zeros(plan.shape, np.float32)
        for (i, j), value in zip(plan.gain_powers, self.gain_coef):
            g += np.float32(value) * np.outer(plan.basis_y[i], plan.basis_x[j])
        g0 = np.float32(self.gain_coef[0])
        return np.clip(g, GAIN_FIELD_RANGE[0] * g0, GAIN_FIELD_RANGE[1] * g0) if g0 > 0 else g

    def offset_field(self, plan: _Plan) -> np.ndarray:
        haze = plan.interp_y @ self.haze.astype(np.float32) @ plan.interp_x.T
        return haze + np.float32(self.offset_adu)

    @property
    def gain(self) -> float:
        return float(self.gain_coef[0])

    def frames(
        self, plan: _Plan, band0: np.ndarray, sides: list[np.ndarray]
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield (frame index, predicted frame, modelled signal) in ADU."""
        gain = self.gain_field(plan)
        offset = self.offset_field(plan)
        for f in range(GROUP_SIZE):
            z = sides[f // N_PHASES]
            u, re, im = (np.float32(c) for c in self.coef[f])
            signal = gain * (u * band0 + re * z.real + im * z.imag)
            yield f, signal + offset + np.float32(self.frame_offset[f]), signal

    def predicted(self, plan: _Plan, band0: np.ndarray, sides: list[np.ndarray]) -> np.ndarray:
        return np.stack([p for _, p, _ in self.frames(plan, band0, sides)]).astype(np.float32)


def _variance(
    noise: CameraNoise, f: int, level: np.ndarray, signal: np.ndarray, eps: float
) -> np.ndarray:
    """Expected variance of frame ``f`` at ``level`` (ADU) with model error ``eps * signal``."""
    gain = noise.gain_adu_per_photon[f]
    var = np.float32(noise.floor_adu2) + (np.float32(eps) * signal) ** 2
    if gain > 0:
        var = var + np.float32(gain) * np.maximum(level - np.float32(noise.offset_adu[f]), 0.0)
    return var


def _fit(
    plan: _Plan,
    frames: np.ndarray,
    band0: np.ndarray,
    sides: list[np.ndarray],
    noise: CameraNoise,
    settings: TrustSettings,
) -> _Fit:
    """Robust weighted least squares on a regular subsample of the pixels.

    First one gain (the median of tile gains, which structure the data do not hold cannot
    drag far), one offset and the per-frame band weights; then the gain's gentle gradient and
    the smooth offset field (a normalized convolution of the residual, for out-of-focus haze
    that a reconstruction may leave out). Every round reweights with Tukey's biweight (wider
    in the first), which gives pixels the model cannot explain no weight at all.
    """
    iy, ix = plan.fit_index
    y = frames[:, iy, ix].astype(np.float64)  # (9, n)
    b0 = band0[iy, ix].astype(np.float64)
    zs = [z[iy, ix] for z in sides]
    parts = np.stack(
        [np.stack([b0, zs[f // N_PHASES].real, zs[f // N_PHASES].imag]) for f in range(9)]
    )  # (9, 3, n)
    coef = plan.init_coef.copy()
    var = np.stack([_variance(noise, f, y[f], np.zeros_like(y[f]), 0.0) for f in range(GROUP_SIZE)])
    robust = np.ones_like(y)
    haze = np.zeros(y.shape[1])
    scalar = plan.basis_fit[:1]
    wts = robust / var
    gain_coef, offset, frame_offset = _solve_fields(y, parts, coef, scalar, scalar, wts)
    for it in range(max(1, settings.robust_iterations) + 1):
        wts = robust / var
        unit = np.einsum("fc,fcn->fn", coef, parts)  # signal at unit gain
        fields = it >= 2  # the gain field and the haze once the weights are robust
        gain_basis = plan.basis_fit[: len(plan.gain_powers)] if fields else scalar
        if it > 0:
            # offsets for the current gain: per frame, the weighted mean of what is left
            gain_coef = np.pad(gain_coef, (0, gain_basis.shape[0] - gain_coef.size))
            gain = _clipped(gain_coef @ gain_basis, gain_coef[0])
            rest = y - haze - gain * unit
            levels = (wts * rest).sum(axis=1) / np.maximum(wts.sum(axis=1), 1e-30)
            offset = levels[:1]
            frame_offset = levels - levels[0]
        # the gain: a robust plane through the gains of tiles, so structure that the data do
        # not hold (a minority of the tiles) cannot pull it down
        target = y - haze - offset[0] - frame_offset[:, None]
        gain_coef = _tile_gain(plan, unit, target, wts, gain_basis)
        gain = _clipped(gain_coef @ gain_basis, gain_coef[0])
        base = haze + offset[0]
        coef = _wls_frames(parts * gain, y - base - frame_offset[:, None], wts)
        # the frames' band weights are relative: the gain alone sets the scale
        scale = float(np.mean(coef[:, 0]))
        if scale > 0:
            coef /= scale
        signal = gain * np.einsum("fc,fcn->fn", coef, parts)
        if fields:
            resid = y - signal - offset[0] - frame_offset[:, None]
            haze = _smooth_weighted(plan, resid, wts)
        pred = signal + (haze + offset[0]) + frame_offset[:, None]
        var = np.stack(
            [
                _variance(noise, f, pred[f], signal[f], settings.model_error_fraction)
                for f in range(GROUP_SIZE)
            ]
        )
        z = np.abs(y - pred) / np.sqrt(var)
        cut = TUKEY_SIGMAS * (1.5 if it == 0 else 1.0)
        robust = np.clip(1.0 - (z / cut) ** 2, 0.0, None) ** 2
    gain_coef = np.pad(gain_coef, (0, len(plan.gain_powers) - gain_coef.size))
    return _Fit(gain_coef, float(offset[0]), haze.reshape(plan.fit_shape), frame_offset, coef)


def _smooth_weighted(plan: _Plan, resid: np.ndarray, wts: np.ndarray) -> np.ndarray:
    """Normalized convolution of the frames' weighted mean residual over `_Plan.haze_sigma`
    (on the fit's subsample grid)."""
    w = wts.sum(axis=0)
    mean = (wts * resid).sum(axis=0) / np.maximum(w, 1e-30)
    w2 = w.reshape(plan.fit_shape)
    num = ndimage.gaussian_filter(
        w2 * mean.reshape(plan.fit_shape), plan.haze_sigma, mode="nearest"
    )
    den = ndimage.gaussian_filter(w2, plan.haze_sigma, mode="nearest")
    return (num / np.maximum(den, 1e-30)).reshape(-1)


def _clipped(gain: np.ndarray, mean_gain: float) -> np.ndarray:
    """The gain field kept within `GAIN_FIELD_RANGE` of its mean."""
    if not mean_gain > 0:
        return gain
    return np.clip(gain, GAIN_FIELD_RANGE[0] * mean_gain, GAIN_FIELD_RANGE[1] * mean_gain)


def _tile_gain(
    plan: _Plan, unit: np.ndarray, target: np.ndarray, wts: np.ndarray, basis: np.ndarray
) -> np.ndarray:
    """Gain field coefficients: a weighted least-squares fit of the polynomial through the
    gains of tiles of the image, leaving out tiles far from their weighted median."""
    ny, nx = plan.fit_shape
    t = plan.tile_steps
    my, mx = max(1, ny // t), max(1, nx // t)
    cy, cx = my * t if ny >= t else ny, mx * t if nx >= t else nx

    def tiles(a: np.ndarray) -> np.ndarray:
        a2 = a.sum(axis=0).reshape(ny, nx)[:cy, :cx]
        return a2.reshape(my, cy // my, mx, cx // mx).sum(axis=(1, 3)).reshape(-1)

    num = tiles(wts * unit * target)
    den = tiles(wts * unit * unit)
    ok = den > 0
    if not ok.any():
        return np.pad([1.0], (0, basis.shape[0] - 1))
    gains = num[ok] / den[ok]
    energy = den[ok]
    b2 = basis.reshape(basis.shape[0], ny, nx)[:, :cy, :cx]
    centres = b2.reshape(basis.shape[0], my, cy // my, mx, cx // mx).mean(axis=(2, 4))
    design = centres.reshape(basis.shape[0], -1)[:, ok].T  # (n_tiles, n_basis)
    # tiles whose gain is far from the median (structure the data do not hold, or data the
    # reconstruction lacks) get no say in the gain
    # the median over tiles (not weighted by their energy: one bright structure that the data
    # do not hold must not outvote the rest) whose gain is measured well
    g_all = float(num[ok].sum() / den[ok].sum())
    precise = np.sqrt(energy) * abs(g_all) >= GAIN_TILE_MIN_SNR
    if np.count_nonzero(precise) < 3:
        precise = energy >= np.sort(energy)[-min(3, energy.size)]
    median = float(np.median(gains[precise]))
    if not median > 0:
        return np.linalg.lstsq(design * np.sqrt(energy)[:, None], gains * np.sqrt(energy))[0]
    dev = (gains - median) / (GAIN_TILE_TOLERANCE * median)
    keep = energy * np.clip(1.0 - dev**2, 0.0, None) ** 2
    if np.count_nonzero(keep) <= basis.shape[0]:
        return np.pad([median], (0, basis.shape[0] - 1))
    return _wls(design, gains, keep)


def _rounded(values: np.ndarray | None) -> tuple[float, ...]:
    return () if values is None else tuple(round(float(v), 3) for v in values)


def _fit_transfer(
    plan: _Plan, frames: np.ndarray, band0: np.ndarray, sides: list[np.ndarray], fit: _Fit
) -> tuple[np.ndarray, np.ndarray]:
    """Ring-wise ratio of measured to predicted contrast, for band 0 (the mean of the frames)
    and the modulated bands (each frame minus its angle's mean), shrunk towards 1 where the
    ring's predicted signal is not well above the noise, within `TRANSFER_RANGE`."""
    h, w = plan.shape
    win = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    base = fit.offset_field(plan)
    meas = frames - base - fit.frame_offset[:, None, None].astype(np.float32)
    pred = np.stack([signal for _, _, signal in fit.frames(plan, band0, sides)])
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    radius = np.hypot(fy, fx) / plan.cutoff
    ring = np.minimum((radius * TRANSFER_RINGS).astype(int), TRANSFER_RINGS)
    noise_bins = radius > NOISE_REGION_FRACTION
    out = []
    for m_img, p_img in (
        (meas.mean(axis=0, keepdims=True), pred.mean(axis=0, keepdims=True)),
        (_minus_angle_mean(meas), _minus_angle_mean(pred)),
    ):
        mm = sfft.fft2(m_img * win, workers=-1)
        pp = sfft.fft2(p_img * win, workers=-1)
        cross = (mm * np.conj(pp)).real.sum(axis=0)
        power = (np.abs(pp) ** 2).sum(axis=0)
        noise = (
            float(np.median((np.abs(mm) ** 2).sum(axis=0)[noise_bins]) / np.log(2.0))
            if noise_bins.any()
            else 0.0
        )
        num = np.bincount(ring.ravel(), cross.ravel(), TRANSFER_RINGS + 1)[:TRANSFER_RINGS]
        den = np.bincount(ring.ravel(), power.ravel(), TRANSFER_RINGS + 1)[:TRANSFER_RINGS]
        count = np.bincount(ring.ravel(), None, TRANSFER_RINGS + 1)[:TRANSFER_RINGS]
        ratio = np.where(den > 0, num / np.maximum(den, 1e-30), 1.0)
        weight = den / (den + noise * count + 1e-30) * den  # signal-to-noise and energy
        if not weight.sum() > 0:
            out.append(np.ones(TRANSFER_RINGS))
            continue
        # a smooth (quadratic in radius) curve through the rings, its mean (the gain's job)
        # taken out, shrunk towards 1 where a ring's prediction is not above the noise
        centres = (np.arange(TRANSFER_RINGS) + 0.5) / TRANSFER_RINGS
        design = np.stack([np.ones_like(centres), centres, centres**2], axis=1)
        curve = design @ _wls(design, np.log(np.clip(ratio, 0.1, 10.0)), weight + 1e-30)
        curve -= np.sum(weight * curve) / weight.sum()
        shrink = den / (den + noise * count + 1e-30)
        factor = np.exp(curve * shrink)
        out.append(np.clip(factor, TRANSFER_RANGE[0], TRANSFER_RANGE[1]))
    return out[0], out[1]


def _minus_angle_mean(stack: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [
            stack[N_PHASES * a : N_PHASES * (a + 1)]
            - stack[N_PHASES * a : N_PHASES * (a + 1)].mean(axis=0)
            for a in range(N_ANGLES)
        ]
    )


def _with_transfer(plan: _Plan, transfer: tuple[np.ndarray, np.ndarray]) -> _Plan:
    """``plan`` with the band weights multiplied by the ring-wise transfer correction."""
    centres = (np.arange(TRANSFER_RINGS) + 0.5) / TRANSFER_RINGS

    def corrected(band: _Band, factors: np.ndarray) -> _Band:
        scale = np.interp(band.radius, centres, factors).astype(np.float32)
        return replace(band, weight=(band.weight * scale).astype(np.complex64))

    return replace(
        plan,
        band0=corrected(plan.band0, transfer[0]),
        sides=tuple(corrected(b, transfer[1]) for b in plan.sides),
    )


def _solve_fields(
    y: np.ndarray,
    parts: np.ndarray,
    coef: np.ndarray,
    gain_basis: np.ndarray,
    offset_basis: np.ndarray,
    wts: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gain field, offset field and per-frame offsets (frame 0's is the field's constant)
    for fixed per-frame band weights."""
    signal = np.einsum("fc,fcn->fn", coef, parts)  # (9, n)
    cols = [signal * b for b in gain_basis]
    cols += [np.broadcast_to(b, y.shape) for b in offset_basis]
    for f in range(1, GROUP_SIZE):
        ind = np.zeros_like(y)
        ind[f] = 1.0
        cols.append(ind)
    design = np.stack([c.reshape(-1) for c in cols], axis=1)
    sol = _wls(design, y.reshape(-1), wts.reshape(-1))
    ng, no = gain_basis.shape[0], offset_basis.shape[0]
    return sol[:ng], sol[ng : ng + no], np.concatenate([[0.0], sol[ng + no :]])


def _wls_frames(design: np.ndarray, target: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """`_wls` for each frame at once: design (9, k, n), target and weights (9, n)."""
    aw = design * weights[:, None, :]
    normal = np.einsum("fkn,fjn->fkj", aw, design)
    rhs = np.einsum("fkn,fn->fk", aw, target)
    k = normal.shape[1]
    reg = 1e-9 * np.trace(normal, axis1=1, axis2=2)[:, None, None] / k * np.eye(k)
    return np.linalg.solve(normal + reg, rhs[..., None])[..., 0]


def _wls(design: np.ndarray, target: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted least squares through the normal equations (small, well-posed systems)."""
    aw = design * weights[:, None]
    normal = design.T @ aw
    rhs = aw.T @ target
    reg = 1e-9 * np.trace(normal) / max(1, normal.shape[0])
    return np.linalg.solve(normal + reg * np.eye(normal.shape[0]), rhs)


def _residuals(
    plan: _Plan,
    frames: np.ndarray,
    band0: np.ndarray,
    sides: list[np.ndarray],
    fit: _Fit,
    noise: CameraNoise,
    settings: TrustSettings,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The residual against the measured frames.

    Returns
    -------
    chi2 : ndarray (half grid)
        Reduced chi-square over the 9 frames at every other camera pixel in each direction
        (one pixel per 2 x 2 block: the map is smoothed over the PSF scale anyway).
    mean_z : ndarray (camera grid)
        The mean of the 9 frames' residuals in its own standard deviations: the camera's
        fixed pattern and the model error are the same in every frame, so they do not
        average out; the shot and read noise do.
    signal : ndarray (half grid)
        The mean predicted signal at the pixels of ``chi2``.
    """
    eps = np.float32(settings.model_error_fraction)
    sub = (slice(None, None, 2), slice(None, None, 2))
    gain = fit.gain_field(plan)
    offset = fit.offset_field(plan)
    g_s, o_s, b0_s = gain[sub], offset[sub], band0[sub]
    chi2 = np.zeros(g_s.shape, np.float32)
    total = np.zeros(g_s.shape, np.float32)
    for f in range(GROUP_SIZE):
        z = sides[f // N_PHASES][sub]
        u, re, im = (np.float32(c) for c in fit.coef[f])
        signal = g_s * (u * b0_s + re * z.real + im * z.imag)
        pred = signal + o_s + np.float32(fit.frame_offset[f])
        var = _variance(noise, f, pred, signal, settings.model_error_fraction)
        r = frames[f][sub] - pred
        chi2 += r * r / var
        total += signal
    # the mean of the frames against the mean prediction, at every pixel
    mean_coef = fit.coef.reshape(N_ANGLES, N_PHASES, 3).mean(axis=1)
    unit = np.float32(mean_coef[:, 0].mean()) * band0
    for a, z in enumerate(sides):
        unit += np.float32(mean_coef[a, 1]) * z.real
        unit += np.float32(mean_coef[a, 2]) * z.imag
    signal_mean = gain * unit
    pred_mean = signal_mean + offset + np.float32(fit.frame_offset.mean())
    gains = np.asarray(noise.gain_adu_per_photon, np.float32)
    offsets = np.asarray(noise.offset_adu, np.float32)
    shot = np.float32(gains.mean()) * np.maximum(pred_mean - np.float32(offsets.mean()), 0.0)
    independent = np.float32(noise.floor_adu2 - noise.fixed_pattern_adu2)
    var_mean = (shot + independent) / np.float32(GROUP_SIZE)
    var_mean += np.float32(noise.fixed_pattern_adu2) + (eps * signal_mean) ** 2
    mean_z = (frames.mean(axis=0) - pred_mean) / np.sqrt(var_mean)
    n = np.float32(GROUP_SIZE)
    return chi2 / n, mean_z.astype(np.float32, copy=False), total / n


def _coherent_z(plan: _Plan, mean_z: np.ndarray) -> tuple[np.ndarray, float]:
    """The mean normalized residual smoothed over the PSF scale, in its standard deviations
    (on the grid of 2 x 2 camera pixels).

    The null standard deviation follows from the noise model; when the image's own spread
    (median absolute deviation) is larger, as where the forward model is only approximate,
    that is used instead, so only local departures count.
    """
    z = _smooth(mean_z, plan.sigma_half) / np.float32(np.sqrt(plan.kernel_sq))
    inner = z[plan.half_interior]
    mad = 1.4826 * float(np.median(np.abs(inner - np.median(inner))))
    return z / np.float32(max(1.0, mad)), mad


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
