"""The trust map's forward residual: the measured frames against the fitted prediction,
normalized by the expected noise, as a reduced chi-square and as the frames' mean residual."""

from __future__ import annotations

import numpy as np

from mlsim_live.recon.base import GROUP_SIZE, N_ANGLES, N_PHASES
from mlsim_live.trust.fit import Fit
from mlsim_live.trust.forward import HalfBands
from mlsim_live.trust.grids import smooth, to_half
from mlsim_live.trust.noise import CameraNoise
from mlsim_live.trust.plan import Plan
from mlsim_live.trust.settings import TrustSettings
from mlsim_live.trust.tasks import Task


def residuals(
    plan: Plan,
    frames: np.ndarray,
    bands: HalfBands,
    fit: Fit,
    noise: CameraNoise,
    settings: TrustSettings,
    parallel: bool = False,
    frames_mean: np.ndarray | None = None,
) -> tuple[np.ndarray, tuple[np.ndarray, float], np.ndarray]:
    """The residual against the measured frames (``parallel``: the mean residual on a second
    thread while the chi-square is summed). ``frames_mean``: `frames_block_mean` of
    ``frames``, when already made.

    Returns
    -------
    chi2 : ndarray (half grid)
        Reduced chi-square over the 9 frames at every other camera pixel in each direction
        (one pixel per 2 x 2 block: the map is smoothed over the PSF scale anyway).
    coherent : (ndarray (half grid), float)
        `coherent_z` of the mean of the 9 frames' residuals per 2 x 2 block, in its own
        standard deviations (the camera's fixed pattern and the model error are the same in
        every frame, so they do not average out; the shot and read noise do), and its spread.
    signal : ndarray (half grid)
        The mean predicted signal at the pixels of ``chi2``.
    """
    gain = fit.gain_field(plan, half=True)
    offset = fit.offset_field(plan, half=True)
    mean = frames_block_mean(frames) if frames_mean is None else frames_mean
    coherent = Task(
        lambda: coherent_z(
            plan,
            _mean_z(mean, bands.band0_block, bands.sides_block, fit, gain, offset, noise, settings),
        ),
        parallel,
    )
    chi2, total = _chi2_half(frames, bands.band0, bands.sides, fit, gain, offset, noise, settings)
    return chi2, coherent.result(), total


def _chi2_half(
    frames: np.ndarray,
    band0: np.ndarray,
    sides: list[np.ndarray],
    fit: Fit,
    gain: np.ndarray,
    offset: np.ndarray,
    noise: CameraNoise,
    settings: TrustSettings,
) -> tuple[np.ndarray, np.ndarray]:
    """Reduced chi-square over the 9 frames and the mean predicted signal, at one camera
    pixel of each 2 x 2 block (the bands, gain and offset on the half grid)."""
    eps = np.float32(settings.model_error_fraction)
    sub = (slice(None, None, 2), slice(None, None, 2))
    g_s, o_s, b0_s = gain, offset, band0
    parts = [(np.ascontiguousarray(z.real), np.ascontiguousarray(z.imag)) for z in sides]
    chi2 = np.zeros(g_s.shape, np.float32)
    total = np.zeros(g_s.shape, np.float32)
    for f in range(GROUP_SIZE):
        re_part, im_part = parts[f // N_PHASES]
        u, re, im = (np.float32(c) for c in fit.coef[f])
        signal = u * b0_s
        signal += re * re_part
        signal += im * im_part
        signal *= g_s
        total += signal
        pred = signal + o_s
        pred += np.float32(fit.frame_offset[f])
        # the expected variance: read noise and fixed pattern, model error, shot noise
        var = np.square(eps * signal)
        var += np.float32(noise.floor_adu2)
        photons = np.float32(noise.gain_adu_per_photon[f])
        if photons > 0:
            var += photons * np.maximum(pred - np.float32(noise.offset_adu[f]), 0.0)
        r = np.subtract(frames[f][sub], pred, out=pred)
        r *= r
        r /= var
        chi2 += r
    n = np.float32(GROUP_SIZE)
    chi2 /= n
    total /= n
    return chi2, total


def frames_block_mean(frames: np.ndarray) -> np.ndarray:
    """The mean of the 9 frames per 2 x 2 block of camera pixels (half grid, float32)."""
    mean = to_half(frames.sum(axis=0, dtype=np.float32))
    mean /= np.float32(GROUP_SIZE)
    return mean


def _mean_z(
    frames_mean: np.ndarray,
    band0: np.ndarray,
    sides: list[np.ndarray],
    fit: Fit,
    gain: np.ndarray,
    offset: np.ndarray,
    noise: CameraNoise,
    settings: TrustSettings,
) -> np.ndarray:
    """The mean of the 9 frames (`frames_block_mean`) against the mean prediction, per 2 x 2
    block of camera pixels (the bands given as block means), in its standard deviations."""
    eps = np.float32(settings.model_error_fraction)
    mean_coef = fit.coef.reshape(N_ANGLES, N_PHASES, 3).mean(axis=1)
    signal = np.float32(mean_coef[:, 0].mean()) * band0
    for a, z in enumerate(sides):
        signal += np.float32(mean_coef[a, 1]) * z.real
        signal += np.float32(mean_coef[a, 2]) * z.imag
    signal *= gain
    pred = signal + offset
    pred += np.float32(fit.frame_offset.mean())
    gains = np.asarray(noise.gain_adu_per_photon, np.float32)
    offsets = np.asarray(noise.offset_adu, np.float32)
    # shot and read noise average over the 9 frames; fixed pattern and model error do not
    var = np.maximum(pred - np.float32(offsets.mean()), 0.0)
    var *= np.float32(gains.mean())
    var += np.float32(noise.floor_adu2 - noise.fixed_pattern_adu2)
    var /= np.float32(GROUP_SIZE)
    var += np.float32(noise.fixed_pattern_adu2)
    signal *= eps
    var += np.square(signal, out=signal)
    # a block mean of 4 pixels whose errors are taken as independent
    var *= np.float32(0.25)
    np.sqrt(var, out=var)
    mean = frames_mean - pred
    mean /= var
    return mean


def coherent_z(plan: Plan, mean_z: np.ndarray) -> tuple[np.ndarray, float]:
    """The mean normalized residual (per 2 x 2 block of camera pixels) smoothed over the PSF
    scale, in its standard deviations.

    The null standard deviation follows from the noise model; when the image's own spread
    (median absolute deviation) is larger, as where the forward model is only approximate,
    that is used instead, so only local departures count.
    """
    z = smooth(mean_z, plan.sigma_half) / np.float32(np.sqrt(plan.kernel_sq))
    inner = z[plan.half_interior]
    mad = 1.4826 * float(np.median(np.abs(inner - np.median(inner))))
    return z / np.float32(max(1.0, mad)), mad


__all__ = ["coherent_z", "frames_block_mean", "residuals"]
