"""The trust map's fit of the forward model to the measured frames: a smooth gain field, an
offset with a smooth haze field, per-frame offsets and band weights (robust weighted least
squares on a subsample of the pixels), and the optional ring-wise transfer correction."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from mlsim_live.recon.base import GROUP_SIZE, N_ANGLES, N_PHASES
from mlsim_live.trust.noise import CameraNoise, frame_variances
from mlsim_live.trust.plan import Plan
from mlsim_live.trust.settings import (
    GAIN_FIELD_RANGE,
    GAIN_TILE_MIN_SNR,
    GAIN_TILE_TOLERANCE,
    NOISE_REGION_FRACTION,
    TRANSFER_RANGE,
    TRANSFER_RINGS,
    TUKEY_SIGMAS,
    TrustSettings,
)


@dataclass(frozen=True)
class Fit:
    """The fitted gain and offset fields, per-frame offsets and band weights."""

    gain_coef: np.ndarray  # (n_gain,) polynomial gain field
    offset_adu: float  # constant offset
    haze: np.ndarray  # (ny, nx) smooth offset field on the fit's subsample grid
    frame_offset: np.ndarray  # (9,)
    coef: np.ndarray  # (9, 3)

    def gain_field(self, plan: Plan, half: bool = False) -> np.ndarray:
        """The gain field on the camera grid (``half``: on its even pixels) in ADU per unit
        of the reconstruction."""
        grid = plan.fit
        step = 2 if half else 1
        basis_y, basis_x = grid.basis_y[:, ::step], grid.basis_x[:, ::step]
        g = np.zeros((basis_y.shape[1], basis_x.shape[1]), np.float32)
        for i in range(basis_y.shape[0]):
            # the terms y^i x^j of this power of y: one row of x factors, broadcast
            row = np.zeros(basis_x.shape[1], np.float32)
            for (pi, pj), value in zip(grid.gain_powers, self.gain_coef):
                if pi == i and value != 0.0:
                    row += np.float32(value) * basis_x[pj]
            if row.any():
                g += basis_y[i][:, None] * row[None, :]
        g0 = np.float32(self.gain_coef[0])
        if g0 > 0:
            np.clip(g, GAIN_FIELD_RANGE[0] * g0, GAIN_FIELD_RANGE[1] * g0, out=g)
        return g

    def offset_field(self, plan: Plan, half: bool = False) -> np.ndarray:
        """The offset (constant plus haze) on the camera grid (``half``: on its even
        pixels), in ADU."""
        haze = self.haze.astype(np.float32) + np.float32(self.offset_adu)
        grid = plan.fit
        if half:
            return grid.interp_x_half.columns(grid.interp_y_half.rows(haze))
        return grid.interp_x.columns(grid.interp_y.rows(haze))

    @property
    def gain(self) -> float:
        """The mean gain."""
        return float(self.gain_coef[0])

    def frames(
        self, plan: Plan, band0: np.ndarray, sides: list[np.ndarray]
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield (frame index, predicted frame, modelled signal) in ADU."""
        gain = self.gain_field(plan)
        offset = self.offset_field(plan)
        for f in range(GROUP_SIZE):
            z = sides[f // N_PHASES]
            u, re, im = (np.float32(c) for c in self.coef[f])
            signal = gain * (u * band0 + re * z.real + im * z.imag)
            yield f, signal + offset + np.float32(self.frame_offset[f]), signal

    def predicted(self, plan: Plan, band0: np.ndarray, sides: list[np.ndarray]) -> np.ndarray:
        """The predicted frames (9, H, W) in ADU."""
        return np.stack([p for _, p, _ in self.frames(plan, band0, sides)]).astype(np.float32)


def fit_forward_model(
    plan: Plan,
    frames: np.ndarray,
    band0: np.ndarray,
    sides: list[np.ndarray],
    noise: CameraNoise,
    settings: TrustSettings,
) -> Fit:
    """Robust weighted least squares on a regular subsample of the pixels (``band0`` and
    ``sides`` on the half grid, `mlsim_live.trust.forward.forward_half`).

    First one gain (the median of tile gains, which structure the data do not hold cannot
    drag far), one offset and the per-frame band weights; then the gain's gentle gradient and
    the smooth offset field (a normalized convolution of the residual, for out-of-focus haze
    that a reconstruction may leave out). Every round reweights with Tukey's biweight (wider
    in the first), which gives pixels the model cannot explain no weight at all.
    """
    iy, ix = plan.fit.index
    cy, cx = plan.fit.index_camera
    y = frames[:, cy, cx].astype(np.float64)  # (9, n)
    b0 = band0[iy, ix].astype(np.float64)
    zs = [z[iy, ix] for z in sides]
    parts = np.stack(
        [np.stack([b0, zs[f // N_PHASES].real, zs[f // N_PHASES].imag]) for f in range(9)]
    )  # (9, 3, n)
    coef = plan.init_coef.copy()
    var = frame_variances(noise, y, None, 0.0)
    robust = np.ones_like(y)
    haze = np.zeros(y.shape[1])
    scalar = plan.fit.basis[:1]
    wts = robust / var
    gain0, offset0, frame_offset = _solve_scalar(y, np.einsum("fc,fcn->fn", coef, parts), wts)
    gain_coef, offset = np.array([gain0]), np.array([offset0])
    for it in range(max(1, settings.robust_iterations) + 1):
        wts = robust / var
        unit = np.einsum("fc,fcn->fn", coef, parts)  # signal at unit gain
        fields = it >= 2  # the gain field and the haze once the weights are robust
        gain_basis = plan.fit.basis[: len(plan.fit.gain_powers)] if fields else scalar
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
        var = frame_variances(noise, pred, signal, settings.model_error_fraction)
        z = np.abs(y - pred) / np.sqrt(var)
        cut = TUKEY_SIGMAS * (1.5 if it == 0 else 1.0)
        robust = np.clip(1.0 - (z / cut) ** 2, 0.0, None) ** 2
    gain_coef = np.pad(gain_coef, (0, len(plan.fit.gain_powers) - gain_coef.size))
    return Fit(gain_coef, float(offset[0]), haze.reshape(plan.fit.shape), frame_offset, coef)


def _smooth_weighted(plan: Plan, resid: np.ndarray, wts: np.ndarray) -> np.ndarray:
    """Normalized convolution of the frames' weighted mean residual over `FitGrid.haze_sigma`
    (on the fit's subsample grid); a haze width of 0 gives the weighted mean everywhere."""
    w = wts.sum(axis=0)
    num = (wts * resid).sum(axis=0)
    sigma = plan.fit.haze_sigma
    if not sigma > 0:
        return np.full(w.shape, num.sum() / max(float(w.sum()), 1e-30))
    mean = num / np.maximum(w, 1e-30)
    w2 = w.reshape(plan.fit.shape)
    num2 = ndimage.gaussian_filter(w2 * mean.reshape(plan.fit.shape), sigma, mode="nearest")
    den = ndimage.gaussian_filter(w2, sigma, mode="nearest")
    return (num2 / np.maximum(den, 1e-30)).reshape(-1)


def _clipped(gain: np.ndarray, mean_gain: float) -> np.ndarray:
    """The gain field kept within `GAIN_FIELD_RANGE` of its mean."""
    if not mean_gain > 0:
        return gain
    return np.clip(gain, GAIN_FIELD_RANGE[0] * mean_gain, GAIN_FIELD_RANGE[1] * mean_gain)


def _tile_gain(
    plan: Plan, unit: np.ndarray, target: np.ndarray, wts: np.ndarray, basis: np.ndarray
) -> np.ndarray:
    """Gain field coefficients: a weighted least-squares fit of the polynomial through the
    gains of tiles of the image, leaving out tiles far from their weighted median."""
    ny, nx = plan.fit.shape
    t = plan.fit.tile_steps
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


def fit_transfer(
    plan: Plan, frames: np.ndarray, band0: np.ndarray, sides: list[np.ndarray], fit: Fit
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


def _solve_scalar(
    y: np.ndarray, unit: np.ndarray, wts: np.ndarray
) -> tuple[float, float, np.ndarray]:
    """One gain, one offset and per-frame offsets (frame 0's is 0) for the signal ``unit``
    (9, n) at unit gain: weighted least squares of ``y = gain * unit + offset + d_f``,
    through its normal equations built from per-frame sums."""
    w_f = wts.sum(axis=1)
    wu = wts * unit
    s_f = wu.sum(axis=1)
    ss_f = (wu * unit).sum(axis=1)
    y_f = (wts * y).sum(axis=1)
    sy_f = (wu * y).sum(axis=1)
    k = 2 + GROUP_SIZE - 1
    normal = np.zeros((k, k))
    normal[0, 0], normal[0, 1], normal[1, 1] = ss_f.sum(), s_f.sum(), w_f.sum()
    normal[0, 2:], normal[1, 2:] = s_f[1:], w_f[1:]
    normal[2:, 2:] = np.diag(w_f[1:])
    normal = np.triu(normal) + np.triu(normal, 1).T
    rhs = np.concatenate([[sy_f.sum(), y_f.sum()], y_f[1:]])
    reg = 1e-9 * np.trace(normal) / k
    sol = np.linalg.solve(normal + reg * np.eye(k), rhs)
    return float(sol[0]), float(sol[1]), np.concatenate([[0.0], sol[2:]])


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


__all__ = ["Fit", "fit_forward_model", "fit_transfer"]
