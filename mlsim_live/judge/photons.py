"""Photon calibration from the data itself (camera offset and gain) and binomial photon thinning.

The gain and offset come from a photon-transfer fit over many small tiles of the raw frames: in
each tile the noise variance is measured where the optics transmit no signal (spatial
frequencies beyond the detection OTF cutoff ``2 NA / lambda``, where a raw frame holds only
noise), from the frames' deviations from their own angle's mean (which cancels the camera's
fixed pattern), and plotted against the tile's mean level. Shot noise makes that variance grow
linearly with the level: ``var = g (level - offset) + read``; the slope is the gain ``g`` in
ADU per photon and the level where the shot noise vanishes is the offset (read noise assumed
small against ``g * offset``, as for any camera with a pedestal). This is the Poisson-Gaussian
model of Foi et al. (IEEE TIP 2008) fitted by photon transfer.

For an EMCCD the slope includes the excess noise factor 2 of electron multiplication: the
"photons" are noise-equivalent photons (variance = mean), which is what binomial thinning needs.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from mlsim_live.errors import MLSimError
from mlsim_live.recon.base import GROUP_SIZE, N_ANGLES, N_PHASES
from mlsim_live.recon.measure import as_group, estimate_cutoff

log = logging.getLogger(__name__)

#: Noise is measured beyond this multiple of the OTF cutoff.
NOISE_BAND_MARGIN = 1.1
#: Fewest noise-only frequency bins per tile for a usable variance.
MIN_BAND_BINS = 100
#: Angles are converted with their own gain only when two angles' gains differ by more than
#: this many standard errors and by more than `PER_ANGLE_RATIO` (frames rescaled per angle, as
#: in some published data sets).
PER_ANGLE_SIGNIFICANCE = 4.0
PER_ANGLE_RATIO = 1.1


@dataclass(frozen=True)
class PhotonCalibration:
    """Camera offset and gain of one SIM group, and the photon counts they imply.

    Attributes
    ----------
    gain_adu_per_photon : float
        Counts per detected (noise-equivalent) photon: the photon-transfer slope. For an EMCCD
        it includes the excess noise factor 2.
    offset_adu : float
        Counts at zero photons.
    gain_per_angle_adu_per_photon, offset_per_angle_adu : tuple of float
        The same, fitted for each pattern angle alone.
    per_angle : bool
        True when the angles' gains differ significantly, so each angle is converted with its
        own gain and offset (data rescaled per angle); False: one gain and offset for all.
    gain_stderr_adu_per_photon, offset_stderr_adu : float
        Standard errors of the fit (of the pooled fit, or the largest per-angle one).
    peak_photons : float
        99.9th percentile of the widefield image (mean of the frames), in photons per pixel
        per frame above the offset.
    background_photons : float
        1st percentile of the same image, in photons.
    fixed_pattern_photons : float
        Rms of the camera's fixed pattern (offset map) beyond the OTF cutoff, in photons per
        pixel: the part of the frames' common pattern that no noise explains. It is in both
        halves of a split and in every rung, so it correlates them like structure; give data
        corrected with the camera's offset map when it is not small.
    n_tiles : int
        Tiles used by the fit.
    noise_band_cycles_per_px : float
        Lowest spatial frequency (cycles per camera pixel) counted as noise-only.
    source : str
        ``"photon transfer"`` (fitted) or ``"given"``.
    """

    gain_adu_per_photon: float
    offset_adu: float
    gain_per_angle_adu_per_photon: tuple[float, ...]
    offset_per_angle_adu: tuple[float, ...]
    per_angle: bool
    gain_stderr_adu_per_photon: float
    offset_stderr_adu: float
    peak_photons: float
    background_photons: float
    fixed_pattern_photons: float
    n_tiles: int
    noise_band_cycles_per_px: float
    source: str = "photon transfer"

    def to_photons(self, group: np.ndarray) -> np.ndarray:
        """Convert a raw (9, H, W) angle-major group into photon counts (float32)."""
        frames = as_group(group, np.float32)
        gains, offsets = self._frame_values()
        return ((frames - offsets[:, None, None]) / gains[:, None, None]).astype(np.float32)

    def _frame_values(self) -> tuple[np.ndarray, np.ndarray]:
        if self.per_angle:
            gains = np.repeat(np.asarray(self.gain_per_angle_adu_per_photon), N_PHASES)
            offsets = np.repeat(np.asarray(self.offset_per_angle_adu), N_PHASES)
        else:
            gains = np.full(GROUP_SIZE, self.gain_adu_per_photon)
            offsets = np.full(GROUP_SIZE, self.offset_adu)
        return gains.astype(np.float32), offsets.astype(np.float32)

    def to_dict(self) -> dict[str, object]:
        """JSON-able dict."""
        d = asdict(self)
        d["gain_per_angle_adu_per_photon"] = list(self.gain_per_angle_adu_per_photon)
        d["offset_per_angle_adu"] = list(self.offset_per_angle_adu)
        return d

    def describe(self) -> str:
        """One line for logs and reports."""
        if self.per_angle:
            gains = ", ".join(f"{g:.4g}" for g in self.gain_per_angle_adu_per_photon)
            offsets = ", ".join(f"{o:.4g}" for o in self.offset_per_angle_adu)
            text = f"gain {gains} ADU/photon and offset {offsets} ADU per angle"
        else:
            text = (
                f"gain {self.gain_adu_per_photon:.4g} +- {self.gain_stderr_adu_per_photon:.2g} "
                f"ADU/photon, offset {self.offset_adu:.5g} +- {self.offset_stderr_adu:.2g} ADU"
            )
        return (
            f"{text} ({self.source}, {self.n_tiles} tiles); peak {self.peak_photons:.4g} "
            f"photons/pixel/frame over a background of {self.background_photons:.3g}; "
            f"fixed pattern {self.fixed_pattern_photons:.2g} photons rms"
        )


def noise_transfer_points(
    frames: np.ndarray, noise_band_cycles_per_px: float, tile_px: int = 32
) -> np.ndarray:
    """Per tile: (mean level, noise variance per pixel) of frames that share one pattern angle.

    Parameters
    ----------
    frames : ndarray (k, H, W), k >= 2
        Frames of one angle (their deviations from their mean cancel fixed-pattern noise).
    noise_band_cycles_per_px : float
        Spatial frequencies beyond this radius (cycles per pixel) hold only noise.
    tile_px : int
        Tile size; tiles overlap by half and carry a Hann window.

    Returns
    -------
    ndarray (n_tiles, 2)
        Window-weighted mean level and noise variance (median noise power over the band,
        converted to a mean with the Gamma distribution of the summed powers).
    """
    k, h, w = frames.shape
    if k < 2:
        raise MLSimError(f"{k} frame(s) per angle; expected at least 2 to measure noise")
    win, w2sum, band = _tile_window_and_band(tile_px, noise_band_cycles_per_px)
    if band.sum() < 8:
        raise MLSimError(
            f"too few noise-only frequencies beyond {noise_band_cycles_per_px:.3f} cycles/pixel "
            "to measure the camera noise; expected optics sampled finer than the OTF cutoff"
        )
    mean_frame = frames.mean(axis=0)
    resid = frames - mean_frame
    # sum over k frames of |deviation|^2 at one frequency: Gamma(k - 1) times the noise power
    median_to_mean = float(stats.gamma.median(k - 1) / (k - 1))
    step = max(1, tile_px // 2)
    ys = range(0, h - tile_px + 1, step)
    xs = range(0, w - tile_px + 1, step)
    blocks = np.stack(
        [resid[:, y : y + tile_px, x : x + tile_px] for y in ys for x in xs]
    )  # (n, k, t, t)
    power = (np.abs(np.fft.rfft2(blocks * win)) ** 2).sum(axis=1)[:, band]
    variance = np.median(power, axis=1) / median_to_mean / w2sum / (k - 1)
    levels = (
        np.array(
            [
                float((mean_frame[y : y + tile_px, x : x + tile_px] * win**2).sum())
                for y in ys
                for x in xs
            ]
        )
        / w2sum
    )
    return np.column_stack([levels, variance])


def _tile_window_and_band(
    tile_px: int, noise_band_cycles_per_px: float
) -> tuple[np.ndarray, float, np.ndarray]:
    """The tiles' Hann window, its sum of squares, and the noise-only band of their rfft2."""
    win1 = np.hanning(tile_px + 2)[1:-1]
    win = np.outer(win1, win1)
    fy = np.fft.fftfreq(tile_px)[:, None]
    fx = np.fft.rfftfreq(tile_px)[None, :]
    band = (np.hypot(fy, fx) > noise_band_cycles_per_px) & (fx > 0) & (fx < 0.5)
    return win, float((win**2).sum()), band


def fixed_pattern_power(
    frames: np.ndarray, noise_band_cycles_per_px: float, tile_px: int = 32
) -> np.ndarray:
    """Per tile: noise-band power per pixel of the mean of all frames (same tiles as
    `noise_transfer_points`): the fixed pattern's variance plus the noise variance / n."""
    win, w2sum, band = _tile_window_and_band(tile_px, noise_band_cycles_per_px)
    mean_frame = frames.mean(axis=0)
    h, w = mean_frame.shape
    step = max(1, tile_px // 2)
    blocks = np.stack(
        [
            mean_frame[y : y + tile_px, x : x + tile_px]
            for y in range(0, h - tile_px + 1, step)
            for x in range(0, w - tile_px + 1, step)
        ]
    )
    blocks = blocks - blocks.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.rfft2(blocks * win)) ** 2
    return np.median(power[:, band], axis=1) / float(np.log(2.0)) / w2sum


@dataclass(frozen=True)
class _Line:
    slope: float
    intercept: float
    slope_se: float
    offset_se: float
    n: int

    @property
    def offset(self) -> float:
        return -self.intercept / self.slope


def _fit_line(points: np.ndarray) -> _Line | None:
    """Weighted, outlier-robust line ``var = slope * level + intercept`` (weights 1/var^2)."""
    x, v = points[:, 0], points[:, 1]
    keep = np.isfinite(x) & np.isfinite(v) & (v > 0)
    if keep.sum() < 6 or np.ptp(x[keep]) <= 0:
        return None
    pred = np.full_like(v, np.median(v[keep]))
    for _ in range(6):
        xs, vs = x[keep], v[keep]
        wts = 1.0 / np.maximum(pred[keep], 1e-12 * np.max(vs))
        design = np.column_stack([xs, np.ones_like(xs)]) * wts[:, None]
        coef, *_ = np.linalg.lstsq(design, vs * wts, rcond=None)
        resid = vs * wts - design @ coef
        cov = float(resid @ resid) / max(1, xs.size - 2) * np.linalg.pinv(design.T @ design)
        pred = coef[0] * x + coef[1]
        rel = (v - pred) / np.maximum(np.abs(pred), 1e-12)
        spread = 1.4826 * np.median(np.abs(rel[keep] - np.median(rel[keep])))
        new_keep = np.isfinite(x) & np.isfinite(v) & (v > 0) & (np.abs(rel) < 5 * max(spread, 1e-6))
        if new_keep.sum() < 6 or np.array_equal(new_keep, keep):
            break
        keep = new_keep
    slope, intercept = float(coef[0]), float(coef[1])
    if not slope > 0:
        return None
    # offset = -intercept / slope: first-order error propagation
    jac = np.array([intercept / slope**2, -1.0 / slope])
    offset_se = float(np.sqrt(max(jac @ cov @ jac, 0.0)))
    return _Line(slope, intercept, float(np.sqrt(max(cov[0, 0], 0.0))), offset_se, int(keep.sum()))


def estimate_photon_calibration(
    group: np.ndarray,
    cutoff_cycles_per_px: float | None = None,
    tile_px: int | None = None,
) -> PhotonCalibration:
    """Estimate a raw SIM group's camera offset and gain from its own noise.

    Parameters
    ----------
    group : ndarray (9, H, W)
        Raw frames, angle-major, in camera counts (offset included).
    cutoff_cycles_per_px : float, optional
        Detection OTF cutoff ``2 NA pixel / lambda`` in cycles per camera pixel; estimated from
        the power spectrum when omitted.
    tile_px : int, optional
        Tile size (default 32, or 64 when a 32 px tile holds too few noise-only frequencies).

    Returns
    -------
    PhotonCalibration

    Raises
    ------
    MLSimError
        When the frames hold too little noise-only bandwidth or too little range of levels to
        fit the noise (one line, with what to give instead).
    """
    frames = as_group(group, np.float64)
    _, h, w = frames.shape
    if cutoff_cycles_per_px is None:
        cutoff_cycles_per_px = estimate_cutoff(frames)
        log.debug("estimated OTF cutoff %.3f cycles/px for the noise fit", cutoff_cycles_per_px)
    band_start = min(NOISE_BAND_MARGIN * cutoff_cycles_per_px, 0.62)
    if tile_px is None:
        tile_px = 32
        if _band_bins(32, band_start) < MIN_BAND_BINS and min(h, w) >= 128:
            tile_px = 64
    tile_px = int(min(tile_px, h, w))
    per_angle_points = [
        noise_transfer_points(frames[a * N_PHASES : (a + 1) * N_PHASES], band_start, tile_px)
        for a in range(N_ANGLES)
    ]
    lines = [_fit_line(p) for p in per_angle_points]
    pooled = _fit_line(np.concatenate(per_angle_points))
    if pooled is None or any(line is None for line in lines):
        raise MLSimError(
            "cannot fit the camera noise: the noise does not grow with the signal level "
            "(too little signal range or noise-only bandwidth); expected a group with signal"
        )
    per_angle = _angles_differ([line for line in lines if line is not None])
    gains = tuple(line.slope for line in lines if line is not None)
    offsets = tuple(line.offset for line in lines if line is not None)
    wf = frames.mean(axis=0)
    # fixed pattern: noise-band power of the mean of all 9 frames beyond its noise share
    fits = [line if per_angle else pooled for line in lines]
    noise_var = np.mean(
        [
            fit.slope * points[:, 0] + fit.intercept
            for fit, points in zip(fits, per_angle_points, strict=True)
            if fit is not None
        ],
        axis=0,
    )
    fixed_var = fixed_pattern_power(frames, band_start, tile_px) - noise_var / GROUP_SIZE
    fixed_pattern_adu = float(np.sqrt(max(float(np.median(fixed_var)), 0.0)))
    if per_angle:
        gain = float(np.mean(gains))
        offset = float(np.mean(offsets))
        gain_se = max(line.slope_se for line in lines if line is not None)
        offset_se = max(line.offset_se for line in lines if line is not None)
        photons_wf = np.mean(
            [
                (frames[a * N_PHASES : (a + 1) * N_PHASES].mean(axis=0) - offsets[a]) / gains[a]
                for a in range(N_ANGLES)
            ],
            axis=0,
        )
    else:
        gain, offset = pooled.slope, pooled.offset
        gain_se, offset_se = pooled.slope_se, pooled.offset_se
        photons_wf = (wf - offset) / gain
    calib = PhotonCalibration(
        gain_adu_per_photon=float(gain),
        offset_adu=float(offset),
        gain_per_angle_adu_per_photon=tuple(float(g) for g in gains),
        offset_per_angle_adu=tuple(float(o) for o in offsets),
        per_angle=per_angle,
        gain_stderr_adu_per_photon=float(gain_se),
        offset_stderr_adu=float(offset_se),
        peak_photons=float(np.percentile(photons_wf, 99.9)),
        background_photons=float(np.percentile(photons_wf, 1.0)),
        fixed_pattern_photons=fixed_pattern_adu / float(gain),
        n_tiles=int(sum(len(p) for p in per_angle_points)),
        noise_band_cycles_per_px=float(band_start),
    )
    if per_angle:
        log.info("the angles' gains differ (frames scaled per angle): converting each on its own")
    return calib


def given_calibration(
    group: np.ndarray, gain_adu_per_photon: float, offset_adu: float
) -> PhotonCalibration:
    """A calibration from known camera values (no fit), with the group's photon levels."""
    if not gain_adu_per_photon > 0:
        raise MLSimError(f"gain {gain_adu_per_photon} ADU/photon; expected a positive number")
    frames = as_group(group, np.float64)
    photons_wf = (frames.mean(axis=0) - offset_adu) / gain_adu_per_photon
    return PhotonCalibration(
        gain_adu_per_photon=float(gain_adu_per_photon),
        offset_adu=float(offset_adu),
        gain_per_angle_adu_per_photon=(float(gain_adu_per_photon),) * N_ANGLES,
        offset_per_angle_adu=(float(offset_adu),) * N_ANGLES,
        per_angle=False,
        gain_stderr_adu_per_photon=0.0,
        offset_stderr_adu=0.0,
        peak_photons=float(np.percentile(photons_wf, 99.9)),
        background_photons=float(np.percentile(photons_wf, 1.0)),
        fixed_pattern_photons=float("nan"),
        n_tiles=0,
        noise_band_cycles_per_px=float("nan"),
        source="given",
    )


def _band_bins(tile_px: int, band_start: float) -> int:
    fy = np.fft.fftfreq(tile_px)[:, None]
    fx = np.fft.rfftfreq(tile_px)[None, :]
    return int(((np.hypot(fy, fx) > band_start) & (fx > 0) & (fx < 0.5)).sum())


def _angles_differ(lines: list[_Line]) -> bool:
    """True when two angles' gains differ significantly (see `PER_ANGLE_SIGNIFICANCE`)."""
    for i, a in enumerate(lines):
        for b in lines[i + 1 :]:
            se = np.hypot(a.slope_se, b.slope_se)
            ratio = max(a.slope, b.slope) / min(a.slope, b.slope)
            if ratio > PER_ANGLE_RATIO and abs(a.slope - b.slope) > PER_ANGLE_SIGNIFICANCE * se:
                return True
    return False


# --------------------------------------------------------------------------------------------
# Binomial thinning
# --------------------------------------------------------------------------------------------


def _counts(photons: np.ndarray) -> np.ndarray:
    """Photon counts rounded to integers (negative read-noise excursions keep their sign)."""
    return np.rint(np.asarray(photons, dtype=np.float64)).astype(np.int64)


def thin_photons(photons: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Keep each photon with probability ``fraction`` (binomial thinning).

    Thinning a Poisson count of mean ``lam`` gives an exact Poisson count of mean
    ``fraction * lam``: the frames a camera would have recorded at that lower dose (its read
    noise scaled down with the signal).

    Parameters
    ----------
    photons : ndarray
        Photon counts (offset removed, divided by the gain); rounded to integers first.
    fraction : float
        Dose fraction in (0, 1].
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of float32, same shape
    """
    if not 0.0 < fraction <= 1.0:
        raise MLSimError(f"dose fraction {fraction}; expected a number in (0, 1]")
    n = _counts(photons)
    kept = rng.binomial(np.abs(n), fraction) * np.sign(n)
    return kept.astype(np.float32)


def split_photons(photons: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split every pixel's photons at random into two halves (independent Poisson at half dose).

    Returns
    -------
    (ndarray, ndarray) of float32
        The halves; they sum to the rounded counts.
    """
    n = _counts(photons)
    first = rng.binomial(np.abs(n), 0.5) * np.sign(n)
    return first.astype(np.float32), (n - first).astype(np.float32)
