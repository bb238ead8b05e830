"""The trust map's plan: everything that depends only on the frame shape and the pattern
estimate (the forward model's band geometry and transfer, the passband mask, the fit's
subsample grid and smoothing widths), made once and reused for every group."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from mlsim_live.recon.base import GROUP_SIZE, N_PHASES
from mlsim_live.recon.estimate import GroupEstimate
from mlsim_live.sim.optics import incoherent_otf
from mlsim_live.trust.settings import (
    CLAIMED_OTF_EPS,
    DEFAULT_MODULATION,
    FIT_PIXELS_PER_FRAME,
    GAIN_TILE_PSF_FWHM,
    PAD_PSF_RADII,
    SMOOTH_TRUNCATE,
    TRANSFER_RINGS,
    TrustSettings,
)

#: Transfer of a band at camera frequency f for content at frequency g of the reconstruction.
TransferFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Band:
    """Where one band of the forward model takes its values from and puts them."""

    source: np.ndarray  # flat indices into the reconstruction's rfft2 half spectrum
    conj: np.ndarray | None  # float32 +-1: sign of the imaginary part (conjugate mirror)
    weight: np.ndarray  # complex64 transfer per used bin
    target: np.ndarray  # flat indices into the camera spectrum
    radius: np.ndarray  # float32 |f| / cutoff of the camera frequency per used bin
    unique: bool  # targets unique (no aliasing): plain assignment instead of bincount
    ramp: np.ndarray | None  # (H, W) complex64: exp(2 pi i dk.r), the sub-bin part of k


@dataclass(frozen=True)
class LinearInterp:
    """Linear interpolation along one axis from sorted nodes onto ``0 .. n-1`` (held constant
    beyond the ends): ``out[i] = a[lo[i]] * (1 - t[i]) + a[hi[i]] * t[i]``."""

    lo: np.ndarray  # (n,) intp
    hi: np.ndarray  # (n,) intp
    t: np.ndarray  # (n,) float32 in [0, 1]

    @classmethod
    def onto(cls, nodes: np.ndarray, n: int) -> LinearInterp:
        """From values at ``nodes`` (increasing) onto every index ``0 .. n-1``."""
        x = np.arange(n, dtype=np.float64)
        if nodes.size == 1:
            zero = np.zeros(n, np.intp)
            return cls(zero, zero, np.zeros(n, np.float32))
        lo = np.clip(np.searchsorted(nodes, x, side="right") - 1, 0, nodes.size - 2)
        t = np.clip((x - nodes[lo]) / (nodes[lo + 1] - nodes[lo]), 0.0, 1.0)
        return cls(lo.astype(np.intp), (lo + 1).astype(np.intp), t.astype(np.float32))

    def rows(self, a: np.ndarray) -> np.ndarray:
        """``a`` (m, k) interpolated along axis 0 onto (n, k)."""
        t = self.t[:, None]
        out = a[self.hi] * t
        out += a[self.lo] * (np.float32(1.0) - t)
        return out

    def columns(self, a: np.ndarray) -> np.ndarray:
        """``a`` (k, m) interpolated along axis 1 onto (k, n)."""
        out = a[:, self.hi] * self.t
        out += a[:, self.lo] * (np.float32(1.0) - self.t)
        return out


@dataclass(frozen=True)
class FitGrid:
    """The regular subsample of camera pixels the gain, offsets and band weights are fitted
    on, and the smooth fields' bases on it."""

    index: tuple[np.ndarray, np.ndarray]  # (iy, ix) of every fitted pixel, row-major
    shape: tuple[int, int]  # (ny, nx) of the subsample grid
    basis: np.ndarray  # (n_basis, n_fit) gain polynomial terms at the fitted pixels
    basis_y: np.ndarray  # (deg + 1, H) polynomial factors
    basis_x: np.ndarray  # (deg + 1, W)
    gain_powers: tuple[tuple[int, int], ...]  # (i, j) of y^i x^j, by total degree
    tile_steps: int  # subsample steps per tile of the robust gain
    haze_sigma: float  # smoothing of the offset field, in subsample steps (0: one offset)
    interp_y: LinearInterp  # from the subsample grid's rows onto the camera's
    interp_x: LinearInterp


@dataclass(frozen=True)
class Plan:
    """What `mlsim_live.trust.TrustMapper` precomputes for one frame shape and estimate."""

    shape: tuple[int, int]  # camera frames
    spec_shape: tuple[int, int]  # the padded camera grid of the forward model
    pad: tuple[int, int, int, int]  # camera pixels before/after in y, before/after in x
    crop: tuple[slice, slice]  # the frames within the padded camera grid
    crop_fine: tuple[slice, slice]  # the reconstruction within the padded 2x grid
    band0: Band
    sides: tuple[Band, ...]
    out_band: np.ndarray  # (2H, W+1) float32 mask beyond the SIM passband
    cutoff: float
    kernel_sq: float  # variance of a smoothed white unit-variance camera-grid map
    kernel_peak: float  # largest weight of the smoothing kernel on the half grid
    sigma_half: float  # smoothing on the grid of 2 x 2 camera pixels, in its pixels
    half_shape: tuple[int, int]
    half_interior: tuple[slice, slice]
    border_px: int
    fit: FitGrid
    init_coef: np.ndarray  # (9, 3): band-0 weight, Re and Im weights per frame


def make_plan(est: GroupEstimate, settings: TrustSettings) -> Plan:
    """The plan of ``est`` (frame shape, pattern, OTF) under ``settings``."""
    h, w = est.shape
    fc = est.cutoff_cycles_per_px
    ks = [p.k_cycles_per_px for p in est.patterns]
    # the reconstruction is mirrored beyond its borders (and the spectra sized for a fast
    # FFT), so the blur near a border sees a continuation, not the opposite side
    pad = int(np.ceil(PAD_PSF_RADII * 1.22 / fc))
    spec_shape = (int(sfft.next_fast_len(h + 2 * pad)), int(sfft.next_fast_len(w + 2 * pad)))
    crop = (slice(pad, pad + h), slice(pad, pad + w))
    band0, sides = _forward_bands(est, settings, spec_shape, crop)
    # PSF standard deviation 0.21 lambda / NA = 0.42 / fc camera pixels
    sigma_psf = 0.42 / fc
    sigma_px = float(settings.smoothing_psf_sigmas * sigma_psf)
    # the 2 x 2 block mean blurs by 1/12 of a half-grid pixel squared per axis
    sigma_half = float(np.sqrt(max(sigma_px**2 / 4.0 - 1.0 / 12.0, 0.05)))
    border = (
        int(settings.border_px) if settings.border_px is not None else int(np.ceil(2.0 * 1.22 / fc))
    )
    border = min(border, (min(h, w) - 8) // 2)
    kernel = smoothing_kernel(sigma_half)
    return Plan(
        shape=(h, w),
        spec_shape=spec_shape,
        pad=(pad, spec_shape[0] - h - pad, pad, spec_shape[1] - w - pad),
        crop=crop,
        crop_fine=(slice(2 * pad, 2 * (pad + h)), slice(2 * pad, 2 * (pad + w))),
        band0=band0,
        sides=sides,
        out_band=_out_of_band_mask(spec_shape, fc, ks, settings.passband_margin),
        cutoff=fc,
        # a block mean of 4 independent pixels, then the kernel
        kernel_sq=0.25 * float((kernel**2).sum() ** 2),
        kernel_peak=float(kernel.max() ** 2),
        sigma_half=sigma_half,
        half_shape=((h + 1) // 2, (w + 1) // 2),
        half_interior=(
            slice(border // 2, (h - border) // 2),
            slice(border // 2, (w - border) // 2),
        ),
        border_px=border,
        fit=_fit_grid((h, w), border, fc, settings),
        init_coef=_initial_coef(est, pad),
    )


def _forward_bands(
    est: GroupEstimate,
    settings: TrustSettings,
    spec_shape: tuple[int, int],
    crop: tuple[slice, slice],
) -> tuple[Band, tuple[Band, ...]]:
    """Band 0 (onto the camera's real half spectrum) and each angle's modulated band (onto
    the full complex spectrum) of the padded camera grid."""
    h, w = spec_shape
    fc = est.cutoff_cycles_per_px
    ks = [p.k_cycles_per_px for p in est.patterns]
    k_max = max(float(np.hypot(*k)) for k in ks)
    damping = est.otf_damping
    # every bin of the 2x grid's spectrum, in cycles per camera pixel (signed bin numbers)
    by = np.fft.fftfreq(2 * h, 1.0 / (2 * h)).astype(int)[:, None]
    bx = np.fft.fftfreq(2 * w, 1.0 / (2 * w)).astype(int)[None, :]
    by, bx = np.broadcast_arrays(by, bx)
    inside = np.hypot(by / h, bx / w) < fc
    bins = (by[inside], bx[inside])

    def transfer(f_y: np.ndarray, f_x: np.ndarray, gy: np.ndarray, gx: np.ndarray) -> np.ndarray:
        """Detection OTF at camera frequency f times the regularized inverse of the OTF the
        reconstruction claims at its frequency g."""
        if settings.resolution == "sim":
            claimed = incoherent_otf(np.hypot(gy, gx) / (fc + k_max))
        else:
            claimed = detection_otf(gy, gx, fc, damping)
        inverse = claimed / (claimed * claimed + CLAIMED_OTF_EPS**2)
        return detection_otf(f_y, f_x, fc, damping) * inverse

    band0 = _make_band(bins, spec_shape, fc, (0, 0), (0.0, 0.0), False, transfer)
    sides = []
    for ky, kx in ks:
        k_bins = (round(ky * h), round(kx * w))
        dk = (ky - k_bins[0] / h, kx - k_bins[1] / w)
        band = _make_band(bins, spec_shape, fc, k_bins, dk, True, transfer)
        if band.ramp is not None:
            band = replace(band, ramp=np.ascontiguousarray(band.ramp[crop]))
        sides.append(band)
    return band0, tuple(sides)


def _make_band(
    bins: tuple[np.ndarray, np.ndarray],
    spec_shape: tuple[int, int],
    fc: float,
    k_bins: tuple[int, int],
    dk: tuple[float, float],
    full: bool,
    transfer: TransferFn,
) -> Band:
    """The band of the camera bins ``bins`` (within the cutoff) that takes the
    reconstruction's content at ``f - k`` (``k`` = ``k_bins`` bins plus the sub-bin ``dk``);
    ``full``: onto the full complex spectrum, else onto the real half spectrum."""
    h, w = spec_shape
    by, bx = bins
    gby, gbx = by - k_bins[0], bx - k_bins[1]
    ok = (gby >= -h) & (gby < h) & (gbx >= -w) & (gbx <= w)
    sy, sx, gby, gbx = by[ok], bx[ok], gby[ok], gbx[ok]
    gy, gx = gby / h, gbx / w
    # camera frequency of this content: f = g + k
    f_y, f_x = sy / h + dk[0], sx / w + dk[1]
    # the 2x grid's pixel centres sit at camera coordinates j/2 - 1/4
    weight = 0.25 * transfer(f_y, f_x, gy, gx) * np.exp(2j * np.pi * 0.25 * (gy + gx))
    mirror = gbx < 0
    src_y = np.where(mirror, -gby, gby) % (2 * h)
    src_x = np.where(mirror, -gbx, gbx)
    source = src_y * (w + 1) + src_x
    conj = np.where(mirror, -1.0, 1.0).astype(np.float32)
    ty, tx = sy % h, sx % w
    radius = np.hypot(f_y, f_x) / fc
    if full:
        target = ty * w + tx
    else:
        keep = tx <= w // 2
        source, conj, weight, radius = source[keep], conj[keep], weight[keep], radius[keep]
        target = ty[keep] * (w // 2 + 1) + tx[keep]
    used = np.abs(weight) > 0
    source, conj, weight, target = source[used], conj[used], weight[used], target[used]
    ramp = None
    if full and (dk[0] != 0.0 or dk[1] != 0.0):
        yy = np.arange(h)[:, None]
        xx = np.arange(w)[None, :]
        ramp = np.exp(2j * np.pi * (dk[0] * yy + dk[1] * xx)).astype(np.complex64)
    return Band(
        source=source.astype(np.intp),
        conj=conj if np.any(conj < 0) else None,
        weight=weight.astype(np.complex64),
        target=target.astype(np.intp),
        radius=radius[used].astype(np.float32),
        unique=bool(np.unique(target).size == target.size),
        ramp=ramp,
    )


def _out_of_band_mask(
    spec_shape: tuple[int, int], fc: float, ks: list[tuple[float, float]], margin: float
) -> np.ndarray:
    """1 beyond the SIM passband (the detection passband and its copies shifted by ``+-k``,
    each of radius ``margin * fc``), on the padded 2x grid's real half spectrum."""
    gy = np.fft.fftfreq(2 * spec_shape[0], 0.5)[:, None]
    gx = np.fft.rfftfreq(2 * spec_shape[1], 0.5)[None, :]
    radius = margin * fc
    supported = np.hypot(gy, gx) <= radius
    for ky, kx in ks:
        for sign in (1.0, -1.0):
            supported |= np.hypot(gy - sign * ky, gx - sign * kx) <= radius
    return (~supported).astype(np.float32)


def _fit_grid(shape: tuple[int, int], border: int, fc: float, settings: TrustSettings) -> FitGrid:
    """About `FIT_PIXELS_PER_FRAME` pixels on a regular grid inside the border, with the gain
    field's polynomial terms (by total degree, so that each field's terms are a prefix)."""
    h, w = shape
    step = max(1, int(np.sqrt((h - 2 * border) * (w - 2 * border) / FIT_PIXELS_PER_FRAME)))
    iy = np.arange(border, h - border, step)
    ix = np.arange(border, w - border, step)
    index = (np.repeat(iy, ix.size), np.tile(ix, iy.size))
    deg = settings.gain_degree
    powers = tuple((i, d - i) for d in range(deg + 1) for i in range(d + 1))
    yn = np.linspace(-1.0, 1.0, h)
    xn = np.linspace(-1.0, 1.0, w)
    sigma_psf = 0.42 / fc
    return FitGrid(
        index=index,
        shape=(iy.size, ix.size),
        basis=np.stack([yn[index[0]] ** i * xn[index[1]] ** j for i, j in powers]),
        basis_y=np.stack([yn**i for i in range(deg + 1)]).astype(np.float32),
        basis_x=np.stack([xn**j for j in range(deg + 1)]).astype(np.float32),
        gain_powers=powers,
        tile_steps=max(2, round(GAIN_TILE_PSF_FWHM * 1.02 / fc / step)),
        haze_sigma=float(settings.haze_psf_sigmas * sigma_psf / step),
        interp_y=LinearInterp.onto(iy, h),
        interp_x=LinearInterp.onto(ix, w),
    )


def _initial_coef(est: GroupEstimate, pad: int) -> np.ndarray:
    """(9, 3) band-0 weight and the modulation's Re and Im weights of each frame, from the
    estimate's phases (at the padded grid's origin) and modulation."""
    init = np.zeros((GROUP_SIZE, 3))
    for a, p in enumerate(est.patterns):
        m = p.modulation if np.isfinite(p.modulation) else DEFAULT_MODULATION
        for q, phi in enumerate(p.phases_rad):
            phi = phi - 2.0 * np.pi * (p.k_cycles_per_px[0] + p.k_cycles_per_px[1]) * pad
            init[N_PHASES * a + q] = (1.0, m * np.cos(phi), -m * np.sin(phi))
    return init


def smoothing_kernel(sigma_px: float) -> np.ndarray:
    """The 1D kernel of `mlsim_live.trust.grids.smooth`."""
    delta = np.zeros(int(8 * sigma_px) | 1, np.float64)
    delta[delta.size // 2] = 1.0
    return ndimage.gaussian_filter1d(delta, sigma_px, mode="constant", truncate=SMOOTH_TRUNCATE)


def detection_otf(fy: np.ndarray, fx: np.ndarray, fc: float, damping: float) -> np.ndarray:
    """Detection OTF with the estimate's damping and the camera-pixel aperture."""
    rho = np.hypot(fy, fx) / fc
    otf = incoherent_otf(rho)
    if damping != 1.0:
        otf = otf * np.power(damping, np.minimum(rho, 1.0))
    return otf * np.sinc(fy) * np.sinc(fx)


def with_transfer(plan: Plan, transfer: tuple[np.ndarray, np.ndarray]) -> Plan:
    """``plan`` with the band weights multiplied by the ring-wise transfer correction."""
    centres = (np.arange(TRANSFER_RINGS) + 0.5) / TRANSFER_RINGS

    def corrected(band: Band, factors: np.ndarray) -> Band:
        scale = np.interp(band.radius, centres, factors).astype(np.float32)
        return replace(band, weight=(band.weight * scale).astype(np.complex64))

    return replace(
        plan,
        band0=corrected(plan.band0, transfer[0]),
        sides=tuple(corrected(b, transfer[1]) for b in plan.sides),
    )


__all__ = ["Band", "FitGrid", "LinearInterp", "Plan", "detection_otf", "make_plan", "with_transfer"]
