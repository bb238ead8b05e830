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
class HalfBand:
    """One band of the forward model folded onto the half grid (every other camera pixel):
    sampling the camera grid at even pixels folds its spectrum onto a quarter of the bins,
    so the frames are predicted there with inverse FFTs a quarter of the size. ``weight``
    gives the camera pixel of each 2 x 2 block, ``weight_block`` the block's mean (the
    spectrum times the 2-pixel box's transfer)."""

    source: np.ndarray  # flat indices into the reconstruction's rfft2 half spectrum
    conj: np.ndarray | None  # float32 +-1: sign of the imaginary part (conjugate mirror)
    weight: np.ndarray  # complex64: the pixel (2i, 2j)
    weight_block: np.ndarray  # complex64: the mean of the block at (2i, 2j)
    target: np.ndarray  # flat indices into the folded (half-grid) spectrum
    splits: tuple[int, int, int]  # ends of the 4 aliasing quadrants (targets unique in each)
    radius: np.ndarray  # float32 |f| / cutoff of the camera frequency per used bin
    ramp: np.ndarray | None  # (ceil(H/2), ceil(W/2)) complex64: exp(2 pi i dk.r) at r = 2 j


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

    index: tuple[np.ndarray, np.ndarray]  # (iy, ix) of every fitted pixel on the half grid
    index_camera: tuple[np.ndarray, np.ndarray]  # the same pixels on the camera grid
    shape: tuple[int, int]  # (ny, nx) of the subsample grid
    basis: np.ndarray  # (n_basis, n_fit) gain polynomial terms at the fitted pixels
    basis_y: np.ndarray  # (deg + 1, H) polynomial factors
    basis_x: np.ndarray  # (deg + 1, W)
    gain_powers: tuple[tuple[int, int], ...]  # (i, j) of y^i x^j, by total degree
    tile_steps: int  # subsample steps per tile of the robust gain
    haze_sigma: float  # smoothing of the offset field, in subsample steps (0: one offset)
    interp_y: LinearInterp  # from the subsample grid's rows onto the camera's
    interp_x: LinearInterp
    interp_y_half: LinearInterp  # ... onto the half grid's
    interp_x_half: LinearInterp


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
    half_bands: tuple[HalfBand, ...]  # band 0 and the sides, folded onto the half grid
    crop_half: tuple[slice, slice]  # the half grid within the padded folded grid
    out_band: np.ndarray  # (2H, W+1) float32 mask beyond the SIM passband
    cutoff: float
    kernel_sq: float  # variance of a smoothed white unit-variance half-grid map
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
    # (even sizes, so that the half grid of even camera pixels folds the spectrum exactly)
    pad = 2 * int(np.ceil(PAD_PSF_RADII * 1.22 / fc / 2.0))
    spec_shape = (_even_fast_len(h + 2 * pad), _even_fast_len(w + 2 * pad))
    crop = (slice(pad, pad + h), slice(pad, pad + w))
    crop_half = (slice(pad // 2, pad // 2 + (h + 1) // 2), slice(pad // 2, pad // 2 + (w + 1) // 2))
    band0, sides, half_bands = _forward_bands(est, settings, spec_shape, crop, crop_half)
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
        half_bands=half_bands,
        crop_half=crop_half,
        out_band=_out_of_band_mask(spec_shape, fc, ks, settings.passband_margin),
        cutoff=fc,
        kernel_sq=float((kernel**2).sum() ** 2),
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
    crop_half: tuple[slice, slice],
) -> tuple[Band, tuple[Band, ...], tuple[HalfBand, ...]]:
    """Band 0 (onto the camera's real half spectrum) and each angle's modulated band (onto
    the full complex spectrum) of the padded camera grid, and all four folded onto the half
    grid."""
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
    band0_full = _make_band(bins, spec_shape, fc, (0, 0), (0.0, 0.0), True, transfer)
    halves = [_fold(band0_full, spec_shape, (0.0, 0.0), crop_half)]
    sides = []
    for ky, kx in ks:
        k_bins = (round(ky * h), round(kx * w))
        dk = (ky - k_bins[0] / h, kx - k_bins[1] / w)
        band = _make_band(bins, spec_shape, fc, k_bins, dk, True, transfer)
        halves.append(_fold(band, spec_shape, dk, crop_half))
        if band.ramp is not None:
            band = replace(band, ramp=np.ascontiguousarray(band.ramp[crop]))
        sides.append(band)
    return band0, tuple(sides), tuple(halves)


def _fold(
    band: Band, spec_shape: tuple[int, int], dk: tuple[float, float], crop_half: tuple[slice, slice]
) -> HalfBand:
    """``band`` (onto the full complex camera spectrum) folded onto the half grid's spectrum:
    the camera pixels (2i, 2j) are the inverse FFT of the 4 aliases summed, over 4; the 2 x 2
    block means take the box's transfer ``exp(i pi f) cos(pi f)`` per axis first."""
    h, w = spec_shape
    qh, qw = h // 2, w // 2
    ty, tx = np.divmod(band.target, w)
    f_y = np.where(ty < qh, ty, ty - h) / h + dk[0]
    f_x = np.where(tx < qw, tx, tx - w) / w + dk[1]
    box = np.exp(1j * np.pi * (f_y + f_x)) * np.cos(np.pi * f_y) * np.cos(np.pi * f_x)
    quadrant = 2 * (ty >= qh) + (tx >= qw)
    order = np.argsort(quadrant, kind="stable")
    splits = np.searchsorted(quadrant[order], [1, 2, 3])
    weight = 0.25 * band.weight.astype(np.complex128)
    ramp = None
    if dk[0] != 0.0 or dk[1] != 0.0:
        yy = 2 * np.arange(qh)[:, None]
        xx = 2 * np.arange(qw)[None, :]
        ramp = np.exp(2j * np.pi * (dk[0] * yy + dk[1] * xx))[crop_half].astype(np.complex64)
    return HalfBand(
        source=band.source[order],
        conj=None if band.conj is None else band.conj[order],
        weight=weight[order].astype(np.complex64),
        weight_block=(weight * box)[order].astype(np.complex64),
        target=((ty % qh) * qw + tx % qw)[order].astype(np.intp),
        splits=(int(splits[0]), int(splits[1]), int(splits[2])),
        radius=band.radius[order],
        ramp=ramp,
    )


def _even_fast_len(n: int) -> int:
    """The smallest even size of at least ``n`` that the FFT handles fast."""
    return 2 * int(sfft.next_fast_len((n + 1) // 2))


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
    step_camera = max(1, int(np.sqrt((h - 2 * border) * (w - 2 * border) / FIT_PIXELS_PER_FRAME)))
    # on the half grid (even camera pixels)
    half_step = max(1, (step_camera + 1) // 2)
    step = 2 * half_step
    iy_h = np.arange((border + 1) // 2, (h - border + 1) // 2, half_step)
    ix_h = np.arange((border + 1) // 2, (w - border + 1) // 2, half_step)
    iy, ix = 2 * iy_h, 2 * ix_h
    index_half = (np.repeat(iy_h, ix_h.size), np.tile(ix_h, iy_h.size))
    index = (2 * index_half[0], 2 * index_half[1])
    deg = settings.gain_degree
    powers = tuple((i, d - i) for d in range(deg + 1) for i in range(d + 1))
    yn = np.linspace(-1.0, 1.0, h)
    xn = np.linspace(-1.0, 1.0, w)
    sigma_psf = 0.42 / fc
    return FitGrid(
        index=index_half,
        index_camera=index,
        shape=(iy.size, ix.size),
        basis=np.stack([yn[index[0]] ** i * xn[index[1]] ** j for i, j in powers]),
        basis_y=np.stack([yn**i for i in range(deg + 1)]).astype(np.float32),
        basis_x=np.stack([xn**j for j in range(deg + 1)]).astype(np.float32),
        gain_powers=powers,
        tile_steps=max(2, round(GAIN_TILE_PSF_FWHM * 1.02 / fc / step)),
        haze_sigma=float(settings.haze_psf_sigmas * sigma_psf / step),
        interp_y=LinearInterp.onto(iy, h),
        interp_x=LinearInterp.onto(ix, w),
        interp_y_half=LinearInterp.onto(iy_h, (h + 1) // 2),
        interp_x_half=LinearInterp.onto(ix_h, (w + 1) // 2),
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

    def corrected_half(band: HalfBand, factors: np.ndarray) -> HalfBand:
        scale = np.interp(band.radius, centres, factors).astype(np.float32)
        return replace(
            band,
            weight=(band.weight * scale).astype(np.complex64),
            weight_block=(band.weight_block * scale).astype(np.complex64),
        )

    return replace(
        plan,
        band0=corrected(plan.band0, transfer[0]),
        sides=tuple(corrected(b, transfer[1]) for b in plan.sides),
        half_bands=tuple(
            corrected_half(b, transfer[0] if i == 0 else transfer[1])
            for i, b in enumerate(plan.half_bands)
        ),
    )


__all__ = [
    "Band",
    "FitGrid",
    "HalfBand",
    "LinearInterp",
    "Plan",
    "detection_otf",
    "make_plan",
    "with_transfer",
]
