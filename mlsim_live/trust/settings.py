"""Settings and constants of the trust map: how residual and band are turned into trust."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mlsim_live.errors import MLSimError

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


__all__ = ["FLAG_LEVEL", "RESOLUTIONS", "Resolution", "TrustSettings"]
