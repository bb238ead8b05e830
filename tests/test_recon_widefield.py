"""Widefield reference reconstruction and the 2x grid it shares with Wiener and the simulator."""

from __future__ import annotations

import numpy as np
import pytest

from mlsim_live.errors import MLSimError
from mlsim_live.recon.base import Reconstructor
from mlsim_live.recon.widefield import (
    WidefieldReconstructor,
    fourier_upsample2,
    upsample2_linear,
)
from mlsim_live.sim import Camera, Optics, Pattern, Signal, SIMParams, simulate_group


def _smooth(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A smooth, non-periodic test image, evaluated at raw-pixel positions (y, x)."""
    return 2.0 + np.exp(-((x - 21.0) ** 2 + (y - 14.0) ** 2) / (2 * 3.5**2)) + 0.02 * x - 0.01 * y


def test_fourier_upsampling_lands_on_the_2x_grid():
    i = np.arange(40, dtype=float)
    raw = _smooth(i[:, None], i[None, :]).astype(np.float32)
    out = fourier_upsample2(raw)
    assert out.shape == (80, 80) and out.dtype == np.float32
    # output pixels 2i and 2i+1 tile raw pixel i: centres at i - 1/4 and i + 1/4
    j = np.arange(80) / 2.0 - 0.25
    err = np.abs(out - _smooth(j[:, None], j[None, :]))[6:-6, 6:-6]
    j0 = np.arange(80) / 2.0  # the other common convention: output 2i on raw pixel i
    err0 = np.abs(out - _smooth(j0[:, None], j0[None, :]))[6:-6, 6:-6]
    assert err.max() < 2e-3
    assert err0.max() > 10 * err.max()


def test_borders_do_not_ring():
    # a ramp with a blob: not periodic, so plain zero-padding would ring along the borders
    y, x = np.mgrid[0:48, 0:40].astype(np.float32)
    img = 10 + 0.5 * x + 0.2 * y + 20 * np.exp(-((x - 20) ** 2 + (y - 24) ** 2) / 18.0)
    fourier = fourier_upsample2(img)
    linear = upsample2_linear(img)
    span = float(img.max() - img.min())
    assert np.abs(fourier - linear)[:4].max() < 0.02 * span
    assert np.abs(fourier - linear)[:, -4:].max() < 0.02 * span
    assert fourier.min() > img.min() - 0.02 * span and fourier.max() < img.max() + 0.05 * span


def test_widefield_removes_background_and_keeps_the_mean():
    rng = np.random.default_rng(0)
    frames = np.rint(rng.uniform(0, 50, size=(9, 40, 56))).astype(np.float32) + 300
    rec = WidefieldReconstructor(offset_adu=300.0)
    out = rec.reconstruct(frames.astype(np.uint16))
    assert isinstance(rec, Reconstructor)
    assert (rec.name, rec.provider, rec.scale) == ("widefield", "numpy", 2)
    assert out.shape == (80, 112) and out.dtype == np.float32
    assert out.mean() == pytest.approx(frames.mean() - 300.0, rel=0.01)
    linear = WidefieldReconstructor(offset_adu=300.0, upsampling="linear").reconstruct(frames)
    assert linear.mean() == pytest.approx(frames.mean() - 300.0, rel=0.01)


def test_widefield_estimates_the_background():
    params = SIMParams(
        signal=Signal(peak_photons=1000, background_photons=30, haze_fraction=0.0),
        camera=Camera(kind="ideal", offset_adu=200, gain_adu_per_e=1.0, quantum_efficiency=1.0),
    )
    group = simulate_group(params, sample="beads", size=64, seed=1)
    out = WidefieldReconstructor().reconstruct(group.raw)
    # background (230 ADU) removed: the dark areas sit near zero
    assert abs(float(np.percentile(out, 5))) < 15.0


def test_widefield_sits_on_the_simulators_ground_truth_grid():
    params = SIMParams(
        optics=Optics(na=1.4, wavelength_nm=520, pixel_size_um=0.08),
        pattern=Pattern(frequency_fraction=0.8),
        signal=Signal(peak_photons=20000, background_photons=0, haze_fraction=0, unevenness=0),
        camera=Camera(kind="ideal", offset_adu=100, read_noise_e=0.5),
    )
    group = simulate_group(params, sample="vesicles", size=64, seed=3)
    wf = WidefieldReconstructor(offset_adu=100.0).reconstruct(group.raw)
    # compare at widefield resolution: blur both the same way
    from scipy import ndimage

    a = ndimage.gaussian_filter(wf, 3.0)[8:-8, 8:-8]
    scores = {}
    for dy, dx in [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]:
        b = ndimage.gaussian_filter(np.roll(group.gt, (dy, dx), axis=(0, 1)), 3.0)[8:-8, 8:-8]
        scores[(dy, dx)] = np.corrcoef(a.ravel(), b.ravel())[0, 1]
    assert scores[(0, 0)] > 0.98
    assert scores[(0, 0)] == max(scores.values()), scores


def test_bad_upsampling_is_refused():
    with pytest.raises(MLSimError, match="expected one of"):
        WidefieldReconstructor(upsampling="nearest")  # type: ignore[arg-type]
    with pytest.raises(MLSimError, match="expected"):
        WidefieldReconstructor().reconstruct(np.zeros((3, 32, 32)))
