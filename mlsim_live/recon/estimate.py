"""SIM pattern-parameter estimation (fairSIM style): band separation, cross-correlation for the
pattern vector, peak phases, modulation and the OTF damping.

The Fourier helpers live in `mlsim_live.recon.fourier`, the background, signal, noise and cutoff
measures in `mlsim_live.recon.measure`, the search for the pattern vector in
`mlsim_live.recon.pattern_search` and the result types in `mlsim_live.recon.pattern_estimate`;
the public names of all of them are re-exported here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft

from mlsim_live.constants import N_ANGLES, N_PHASES
from mlsim_live.recon.fourier import (
    frequency_radius,
    otf_model,
    pad_spectrum,
    separation_matrix,
    tukey_window,
)
from mlsim_live.recon.measure import (
    SIGNAL_PERCENTILE,
    WIENER_BACKGROUND_PERCENTILE,
    as_group,
    equalize_frames,
    estimate_background,
    estimate_cutoff,
    estimate_signal_level,
    noise_std,
)
from mlsim_live.recon.pattern_estimate import GroupEstimate, PatternEstimate, format_estimate
from mlsim_live.recon.pattern_search import (
    AngleCorrelations,
    coarse_peaks,
    correlation_envelope,
    zoom_search,
)
from mlsim_live.sim.optics import Optics

__all__ = [
    "SIGNAL_PERCENTILE",
    "WIENER_BACKGROUND_PERCENTILE",
    "GroupEstimate",
    "PatternEstimate",
    "as_group",
    "equalize_frames",
    "estimate_background",
    "estimate_cutoff",
    "estimate_pattern",
    "estimate_signal_level",
    "format_estimate",
    "frequency_radius",
    "noise_std",
    "otf_model",
    "pad_spectrum",
    "separation_matrix",
    "tukey_window",
]

log = logging.getLogger(__name__)

NOMINAL_PHASE_STEP_RAD = 2.0 * np.pi / N_PHASES
#: Search the pattern frequency between these fractions of the OTF cutoff.
SEARCH_BAND = (0.45, 1.05)
#: Without optics, search up to this multiple of the cutoff seen in the data (at most Nyquist).
SEARCH_FROM_DATA_MAX = 1.7
#: Without optics, the cutoff is raised to at least the pattern frequency over this.
MAX_DATA_PATTERN_FRACTION = 0.95
#: Largest accepted deviation of a measured phase step from 2pi/3 before falling back to nominal.
MAX_PHASE_STEP_ERROR_RAD = 1.0
#: The band overlap used for refinement and modulation: both OTFs above this, DC areas out.
OVERLAP_OTF_MIN = 0.02
OVERLAP_DC_FRACTION = 0.15
#: Noise floors are measured beyond this fraction of the cutoff.
NOISE_REGION_FRACTION = 1.1
OVERLAP_BINS = 10
#: Accepted range of the fitted OTF damping.
DAMPING_RANGE = (0.05, 1.5)


def estimate_pattern(
    group: np.ndarray,
    optics: Optics | None = None,
    *,
    offset_adu: float | None = None,
    pixel_size_um: float | None = None,
    fit_phases: bool = True,
    fit_damping: bool = True,
) -> GroupEstimate:
    """Estimate the illumination pattern of each angle of a SIM group.

    1. Per angle, the three (background-free, Tukey-windowed) frames are separated into bands
       0, +1, -1 with the nominal 2pi/3 phase steps; band +1 is cross-correlated against the
       Wiener-deconvolved band 0 at every integer lag on the 2x grid.
    2. The three correlation maps are searched together between 0.45 and 1.05 of the OTF cutoff
       (without optics: from 0.45 to 1.7 times the cutoff estimated from the data, at most the
       camera Nyquist frequency, as that estimate comes out low at low SNR) for angles ~60 degrees
       apart with one frequency, then each angle's peak in its own map.
    3. k is refined to ~0.002 FFT bin by maximizing the same cross-correlation (band +1 now
       weighted by the OTF, so that its terms add up in phase at the true k) at sub-bin lags,
       evaluated exactly as DFTs of the 2x-grid product on successively finer grids.
    4. The phase of each frame follows from its correlation with band 0 at k (the three values
       lie on a circle whose centre absorbs unequal steps), so steps need not be 2pi/3.
    5. With the bands separated again by the measured phases, the complex ratio of band +1 to
       band 0 over their OTF overlap (DC areas left out, noise power removed) gives a residual
       phase; how that ratio changes across the overlap gives the OTF damping ``d`` (true OTF
       = ideal OTF times ``d^(|f|/fc)``, fairSIM's compensation parameter) shared by the
       angles, and its value where both bands saw a frequency equally gives the modulation.

    Parameters
    ----------
    group : ndarray, shape (9, H, W)
        Raw frames, angle-major, camera counts with offset.
    optics : Optics, optional
        Gives the OTF cutoff and the pixel size. Without it the cutoff is estimated from the data.
    offset_adu : float, optional
        Background to subtract; estimated when omitted.
    pixel_size_um : float, optional
        Pixel size when ``optics`` is not given (for the per-um figures only).
    fit_phases : bool
        Measure the phase steps (True) or assume exact 2pi/3 steps (False).
    fit_damping : bool
        Fit how much faster than the ideal OTF the real one falls (``otf_damping``) from the
        band overlap; with False the ideal OTF is assumed.

    Returns
    -------
    GroupEstimate
    """
    frames = as_group(group)
    h, w = frames.shape[1:]
    bg = estimate_background(frames) if offset_adu is None else float(offset_adu)
    search = _search_range(frames, bg, optics, pixel_size_um)
    angles, ks, contrasts = _pattern_vectors(frames, bg, search)
    cutoff = search.cutoff
    if optics is None:  # at least the pattern's frequency (the data's cutoff comes out low)
        k_max = max(float(np.hypot(*k)) for k in ks)
        cutoff = float(min(max(cutoff, k_max / MAX_DATA_PATTERN_FRACTION), np.sqrt(0.5)))
    noise = noise_std(frames, cutoff, bg)
    fy, fx = frequency_radius((h, w))
    beyond = np.hypot(fy, fx) > NOISE_REGION_FRACTION * cutoff
    fits = [
        _fit_angle(ang, k, contrast, cutoff, beyond, fit_phases)
        for ang, k, contrast in zip(angles, ks, contrasts)
    ]
    damping, mods = _damping_and_modulations([f.overlap for f in fits], fit_damping)
    patterns = tuple(
        _oriented_pattern(fit, modulation, (h, w), cutoff, search.pixel_size_um)
        for fit, modulation in zip(fits, mods)
    )
    est = GroupEstimate(
        patterns=patterns,
        shape=(h, w),
        background_adu=bg,
        signal_adu=estimate_signal_level(frames, bg),
        noise_adu=noise,
        cutoff_cycles_per_px=float(cutoff),
        cutoff_source=search.source,
        pixel_size_um=search.pixel_size_um,
        otf_damping=damping,
    )
    log.debug("pattern estimate: %s", format_estimate(est))
    return est


@dataclass(frozen=True)
class _Search:
    """Where the pattern is looked for.

    ``cutoff`` is the OTF cutoff (cycles/px) from the optics or the data (``source``),
    ``search_cutoff`` the cutoff of the OTF the correlations use, ``q_range`` the ring of |k|
    searched (cycles/px).
    """

    cutoff: float
    source: str
    search_cutoff: float
    q_range: tuple[float, float]
    pixel_size_um: float | None


def _search_range(
    frames: np.ndarray, bg: float, optics: Optics | None, pixel_size_um: float | None
) -> _Search:
    if optics is not None:
        cutoff = optics.cutoff_per_um * optics.pixel_size_um
        q_range = (SEARCH_BAND[0] * cutoff, SEARCH_BAND[1] * cutoff)
        return _Search(cutoff, "optics", cutoff, q_range, optics.pixel_size_um)
    # the cutoff seen in the power spectrum comes out low at low SNR: search well beyond it
    # (the caller raises the cutoff to at least the pattern's frequency)
    cutoff = estimate_cutoff(frames, bg)
    search_cutoff = min(0.5, SEARCH_FROM_DATA_MAX * cutoff)
    q_range = (SEARCH_BAND[0] * cutoff, search_cutoff)
    return _Search(cutoff, "data", search_cutoff, q_range, pixel_size_um)


def _nominal_phases() -> np.ndarray:
    return NOMINAL_PHASE_STEP_RAD * np.arange(N_PHASES)


def _pattern_vectors(
    frames: np.ndarray, bg: float, search: _Search
) -> tuple[list[AngleCorrelations], list[tuple[float, float]], list[float]]:
    """Steps 1 to 3 of `estimate_pattern`: each angle's correlations, its refined k (cycles/px)
    and the contrast of its coarse correlation peak."""
    h, w = frames.shape[1:]
    window = tukey_window((h, w))
    spectra = sfft.fft2(equalize_frames(frames - bg) * window, workers=-1)
    sep_nominal = separation_matrix(_nominal_phases())
    otf = otf_model((h, w), search.search_cutoff)
    angles = [
        AngleCorrelations(spectra[N_PHASES * a : N_PHASES * (a + 1)], otf, search.search_cutoff)
        for a in range(N_ANGLES)
    ]
    weights = [ang.cleaned_weights(sep_nominal) for ang in angles]
    envelope = correlation_envelope(otf, search.search_cutoff)
    maps = [ang.detection_map(wt, envelope) for ang, wt in zip(angles, weights)]
    coarse = coarse_peaks(maps, (h, w), search.q_range)
    del maps
    ks = [
        zoom_search(ang.refinement_objective(wt), c[:2], (h, w))
        for ang, wt, c in zip(angles, weights, coarse)
    ]
    return angles, ks, [c[2] for c in coarse]


@dataclass(frozen=True)
class _AngleFit:
    """Pattern vector, frame phases and band overlap of one angle (before orientation)."""

    k: tuple[float, float]
    phases: np.ndarray
    fitted: bool
    contrast: float
    overlap: _Overlap | None


def _fit_angle(
    ang: AngleCorrelations,
    k: tuple[float, float],
    contrast: float,
    cutoff: float,
    beyond: np.ndarray,
    fit_phases: bool,
) -> _AngleFit:
    """Steps 4 and 5 of `estimate_pattern` for one angle: frame phases at k, then the residual
    phase from the band overlap. ``beyond`` marks the frequencies beyond the cutoff."""
    nominal = _nominal_phases()
    values = ang.frame_correlations(k)
    if fit_phases:
        phases, fitted = _fit_phases(values, nominal)
    else:
        phases, fitted = np.angle(np.sum(values * np.exp(-1j * nominal))) + nominal, False
    bands = np.einsum("bp,pyx->byx", separation_matrix(phases), ang.spec3)
    # noise power per bin of band 0, from beyond the cutoff (a camera's fixed pattern
    # stays in band 0, so this is more than the frames' noise over 3)
    noise_b0 = _power_floor(bands[0][beyond])
    overlap = _band_overlap(bands[0], bands[1], k, cutoff, noise_b0)
    if overlap is not None:
        phases = phases + np.angle(overlap.ratio())
    return _AngleFit(k, phases, fitted, contrast, overlap)


def _damping_and_modulations(
    overlaps: list[_Overlap | None], fit_damping: bool
) -> tuple[float, list[float]]:
    """The OTF damping (1 unless fitted and inside `DAMPING_RANGE`) and each angle's modulation."""
    damping, mods = 1.0, [abs(ov.ratio()) if ov else float("nan") for ov in overlaps]
    if fit_damping:
        fit = _fit_damping(overlaps)
        if fit is not None:
            damping = float(np.clip(fit[0], DAMPING_RANGE[0], DAMPING_RANGE[1]))
            if damping == fit[0]:
                mods = [m if np.isfinite(m) else m0 for m, m0 in zip(fit[1], mods)]
    return damping, mods


def _oriented_pattern(
    fit: _AngleFit,
    modulation: float,
    shape: tuple[int, int],
    cutoff: float,
    px: float | None,
) -> PatternEstimate:
    """The angle's `PatternEstimate`, k reported with its direction in [0, 180)."""
    (ky, kx), phases = fit.k, fit.phases
    # flipping k flips the phases' sign
    direction = np.arctan2(ky, kx)
    if direction < 0 or np.isclose(direction, np.pi):
        ky, kx, phases = -ky, -kx, -phases
    return _make_pattern(ky, kx, phases, modulation, fit.contrast, fit.fitted, shape, cutoff, px)


def _circumcenter(z: np.ndarray) -> complex | None:
    """Centre of the circle through three complex points (None when they are collinear)."""
    b, c = z[1] - z[0], z[2] - z[0]
    d = 2.0 * (b.real * c.imag - b.imag * c.real)
    if abs(d) < 1e-12 * max(abs(b) * abs(c), 1e-300):
        return None
    ux = (c.imag * abs(b) ** 2 - b.imag * abs(c) ** 2) / d
    uy = (b.real * abs(c) ** 2 - c.real * abs(b) ** 2) / d
    return complex(z[0] + complex(ux, uy))


def _fit_phases(values: np.ndarray, nominal: np.ndarray) -> tuple[np.ndarray, bool]:
    """Frame phases from the three frame correlations at k.

    The values are ``c (e^{i phi_p} - mu)`` (mean-free frames), so they lie on a circle around
    ``-c mu``: the phases are the angles seen from the circle's centre. Falls back to the
    nominal steps (best common offset) when the circle is ill-defined or the steps are far off.
    """
    offset = np.angle(np.sum(values * np.exp(-1j * nominal)))
    fallback = offset + nominal
    centre = _circumcenter(values)
    spread = float(np.mean(np.abs(values - values.mean())))
    if centre is None or not np.isfinite(centre) or abs(centre) > 0.5 * spread:
        return fallback, False
    phases = np.angle(values - centre)
    steps = np.angle(np.exp(1j * (phases - phases[0])))
    deviation = np.abs(np.angle(np.exp(1j * (steps - nominal))))
    if np.any(deviation > MAX_PHASE_STEP_ERROR_RAD):
        log.warning(
            "measured phase steps %s rad are far from 2pi/3; using nominal steps",
            np.round(steps, 2).tolist(),
        )
        return fallback, False
    return phases[0] + steps, True


@dataclass(frozen=True)
class _Overlap:
    """Band +1 (moved back by k) against band 0 over their common region, in bins of
    ``t = (|g + k| - |g|) / fc`` (where in the two OTFs a frequency was seen).

    Per bin: ``cross = sum X Y*`` and ``energy = sum |Y|^2`` minus its noise, with
    ``X(g) = B+(g+k) OTF(g)``, ``Y(g) = B0(g) OTF(g+k)``; ``X / Y = m D(|g+k|) / D(|g|)``
    where ``D`` is the true OTF over the model OTF.
    """

    t: np.ndarray
    cross: np.ndarray
    energy: np.ndarray
    total: np.ndarray

    def ratio(self) -> complex:
        """Least-squares ratio over the whole region."""
        total = float(self.total.sum())
        signal = float(self.energy.sum())
        return complex(self.cross.sum() / max(signal, 1e-3 * total, 1e-300))


def _band_overlap(
    b0: np.ndarray,
    bp: np.ndarray,
    k: tuple[float, float],
    cutoff: float,
    noise_power: float,
) -> _Overlap | None:
    """Compare band +1, moved back by k on the 2x grid, with band 0 where both OTFs exceed 2 %
    and away from both bands' DC (unmodulated background, haze); band 0's noise power is
    removed from the energies. None when the bands hardly overlap."""
    h, w = b0.shape
    big = (2 * h, 2 * w)
    otf0 = otf_model((h, w), cutoff, upsample=2)
    otfk = otf_model((h, w), cutoff, shift_cycles_per_px=k, upsample=2)
    r1 = sfft.ifft2(pad_spectrum(bp, big), workers=-1)
    y = np.arange(big[0])[:, None] * 0.5
    x = np.arange(big[1])[None, :] * 0.5
    moved = sfft.fft2(r1 * np.exp(-2j * np.pi * (k[0] * y + k[1] * x)), workers=-1)
    fy, fx = frequency_radius((h, w), 2)
    g0 = np.hypot(fy, fx)
    gk = np.hypot(fy + k[0], fx + k[1])
    dc = OVERLAP_DC_FRACTION * cutoff
    region = (otf0 > OVERLAP_OTF_MIN) & (otfk > OVERLAP_OTF_MIN) & (g0 > dc) & (gk > dc)
    if region.sum() < 10:
        return None
    xs = (moved * otf0)[region]
    ys = (pad_spectrum(b0, big) * otfk)[region]
    t = ((gk - g0) / cutoff)[region]
    edges = np.linspace(-1.0, 1.0, OVERLAP_BINS + 1)
    idx = np.clip(np.digitize(t, edges) - 1, 0, OVERLAP_BINS - 1)
    total = np.bincount(idx, np.abs(ys) ** 2, OVERLAP_BINS)
    noise = noise_power * np.bincount(idx, otfk[region] ** 2, OVERLAP_BINS)
    prod = xs * np.conj(ys)
    cross = np.bincount(idx, prod.real, OVERLAP_BINS) + 1j * np.bincount(
        idx, prod.imag, OVERLAP_BINS
    )
    return _Overlap(0.5 * (edges[1:] + edges[:-1]), cross, total - noise, total)


def _fit_damping(overlaps: list[_Overlap | None]) -> tuple[float, list[float]] | None:
    """Fit ``|X / Y| = m_a d^t`` over the bins of all angles: one OTF damping ``d`` for the
    optics and a modulation ``m_a`` per angle (the ratio at ``t = 0``).

    Only bins whose signal energy is well above their noise count. Returns (d, [m_a]) or None
    when too little is left to fit a slope.
    """
    rows, rhs, wts, which = [], [], [], []
    n = len(overlaps)
    for a, ov in enumerate(overlaps):
        if ov is None:
            continue
        good = (ov.energy > 0.5 * ov.total) & (np.abs(ov.t) <= 0.9) & (ov.energy > 0)
        for j in np.nonzero(good)[0]:
            r = abs(ov.cross[j]) / ov.energy[j]
            if not r > 0:
                continue
            row = np.zeros(n + 1)
            row[a] = 1.0
            row[n] = ov.t[j]
            rows.append(row)
            rhs.append(np.log(r))
            wts.append(np.sqrt(ov.energy[j]))
            which.append(a)
    if len(rows) < 6:
        return None
    t_used = np.array([r[n] for r in rows])
    if t_used.max() - t_used.min() < 0.6:
        return None
    a_mat = np.array(rows) * np.array(wts)[:, None]
    b_vec = np.array(rhs) * np.array(wts)
    present = sorted(set(which))
    a_mat = a_mat[:, [*present, n]]
    sol, *_ = np.linalg.lstsq(a_mat, b_vec, rcond=None)
    damping = float(np.exp(sol[-1]))
    mods = [float("nan")] * n
    for i, a in enumerate(present):
        mods[a] = float(np.exp(sol[i]))
    return damping, mods


def _power_floor(values: np.ndarray) -> float:
    """Mean power of complex noise samples, robustly: median |z|^2 / ln 2 (exponential law)."""
    if values.size < 32:
        return 0.0
    return float(np.median(np.abs(values) ** 2) / np.log(2.0))


def _wrap(phi: float) -> float:
    return float(np.mod(phi, 2 * np.pi))


def _make_pattern(
    ky: float,
    kx: float,
    phases: np.ndarray,
    modulation: float,
    contrast: float,
    fitted: bool,
    shape: tuple[int, int],
    cutoff: float,
    px: float | None,
) -> PatternEstimate:
    freq = float(np.hypot(ky, kx))
    p0 = _wrap(phases[0])
    unwrapped = tuple(float(p0 + np.angle(np.exp(1j * (p - phases[0])))) for p in phases)
    return PatternEstimate(
        k_cycles_per_px=(float(ky), float(kx)),
        k_bins=(float(ky * shape[0]), float(kx * shape[1])),
        k_per_um=None if px is None else (float(ky / px), float(kx / px)),
        angle_deg=float(np.rad2deg(np.arctan2(ky, kx)) % 180.0),
        frequency_cycles_per_px=freq,
        frequency_per_um=None if px is None else freq / px,
        period_px=1.0 / freq,
        period_nm=None if px is None else px * 1e3 / freq,
        frequency_fraction=freq / cutoff,
        phase_rad=p0,
        phases_rad=unwrapped,  # type: ignore[arg-type]
        modulation=modulation,
        peak_contrast=contrast,
        phases_fitted=fitted,
    )
