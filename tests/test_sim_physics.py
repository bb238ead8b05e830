"""Physics of the simulator: pattern peaks, OTF support, noise statistics, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from mlsim_live.errors import MLSimError
from mlsim_live.sim import (
    SAMPLE_KINDS,
    Camera,
    Optics,
    Pattern,
    PhysicsRanges,
    Signal,
    SIMParams,
    incoherent_otf,
    otf_2d,
    random_params,
    simulate_group,
)


def _params(**pattern) -> SIMParams:
    return SIMParams(
        optics=Optics(na=1.4, wavelength_nm=520, pixel_size_um=0.07),
        pattern=Pattern(**({"frequency_fraction": 0.8, "angle_offset_deg": 17.0} | pattern)),
        signal=Signal(peak_photons=2000, background_photons=5, haze_fraction=0.0, unevenness=0.0),
        camera=Camera(kind="ideal", read_noise_e=1.0),
    )


def test_pattern_peaks_at_set_frequency_and_angle():
    params = _params()
    g = simulate_group(params, sample="beads", size=128, seed=4)
    n = 128
    freqs = np.fft.fftfreq(n, d=params.optics.pixel_size_um)
    k = params.pattern_frequency_per_um
    for a in range(3):
        # the modulated band: frame minus the mean of its angle's phases keeps only +-k terms
        frames = g.raw[3 * a : 3 * a + 3].astype(float)
        band = frames[0] - frames.mean(axis=0)
        spec = np.abs(np.fft.fft2(band))
        spec[np.hypot(freqs[:, None], freqs[None, :]) < 0.5 * k] = 0
        iy, ix = np.unravel_index(np.argmax(spec), spec.shape)
        ky, kx = freqs[iy], freqs[ix]
        found_k = np.hypot(ky, kx)
        found_angle = np.rad2deg(np.arctan2(ky, kx)) % 180
        true_angle = (17.0 + 60.0 * a) % 180
        df = freqs[1] - freqs[0]
        assert abs(found_k - k) <= 0.75 * df
        diff = (found_angle - true_angle + 90) % 180 - 90
        assert abs(diff) < np.rad2deg(df / k) + 0.5


def test_otf_support_ends_at_2na_over_lambda():
    optics = Optics(na=1.2, wavelength_nm=600, pixel_size_um=0.05)
    otf = otf_2d((256, 256), 0.05, optics.cutoff_per_um)
    freqs = np.fft.fftfreq(256, d=0.05)
    rho = np.hypot(freqs[:, None], freqs[None, :])
    assert optics.cutoff_per_um == pytest.approx(2 * 1.2 / 0.6)
    assert np.all(otf[rho >= optics.cutoff_per_um] == 0)
    assert np.all(otf[rho < 0.98 * optics.cutoff_per_um] > 0)
    assert otf[0, 0] == pytest.approx(1.0)
    assert incoherent_otf(np.array(0.5)) == pytest.approx(0.3910, abs=1e-3)


def test_raw_frames_carry_no_power_beyond_the_otf():
    # a noise-free camera: the spectrum beyond the cutoff only holds pixel-binning leakage
    params = SIMParams(
        optics=Optics(na=1.0, wavelength_nm=650, pixel_size_um=0.06),
        signal=Signal(peak_photons=1e5, background_photons=0, haze_fraction=0, unevenness=0),
        camera=Camera(kind="ideal", read_noise_e=0.0, gain_adu_per_e=0.05, quantum_efficiency=1.0),
    )
    g = simulate_group(params, sample="filaments", size=128, seed=2)
    spec = np.abs(np.fft.fft2(g.raw[0] - g.raw[0].mean())) ** 2
    freqs = np.fft.fftfreq(128, d=0.06)
    rho = np.hypot(freqs[:, None], freqs[None, :])
    fc = params.optics.cutoff_per_um
    inside = spec[(rho < 0.5 * fc) & (rho > 0.05 * fc)].mean()
    outside = spec[rho > 1.1 * fc].mean()
    assert outside < 1e-3 * inside


@pytest.mark.parametrize("read_noise_e", [0.0, 3.0])
def test_noise_matches_poisson_plus_read_noise(read_noise_e):
    camera = Camera(
        kind="ideal",
        offset_adu=100,
        gain_adu_per_e=2.0,
        read_noise_e=read_noise_e,
        quantum_efficiency=1.0,
    )
    rng = np.random.default_rng(0)
    photons = np.full((200, 200), 50.0)
    adu = camera.expose(photons, rng).astype(float)
    electrons = (adu - 100) / 2.0
    assert electrons.mean() == pytest.approx(50, rel=0.01)
    # rounding to whole ADU adds 1/12 ADU^2
    expected_var = 50 + read_noise_e**2 + (1 / 12) / 4
    assert electrons.var() == pytest.approx(expected_var, rel=0.05)


def test_emccd_has_excess_noise_factor_two():
    camera = Camera(
        kind="emccd",
        offset_adu=100,
        gain_adu_per_e=0.01,
        read_noise_e=0.0,
        em_gain=200,
        quantum_efficiency=1.0,
    )
    adu = camera.expose(np.full((300, 300), 40.0), np.random.default_rng(1)).astype(float)
    electrons = (adu - 100) / (0.01 * 200)
    assert electrons.mean() == pytest.approx(40, rel=0.02)
    assert electrons.var() / electrons.mean() == pytest.approx(2.0, rel=0.1)


def test_scmos_maps_vary_per_pixel():
    camera = Camera(kind="scmos", offset_adu=100, map_spread=0.05, read_noise_e=1.5)
    dark = camera.expose(np.zeros((5, 64, 64)), np.random.default_rng(0)).astype(float)
    assert dark.mean(axis=0).std() > 2.0  # per-pixel offsets differ by ~5 ADU


def test_reproducible_and_consistent_shapes():
    a = simulate_group(_params(), sample="mixture", size=64, seed=11)
    b = simulate_group(_params(), sample="mixture", size=64, seed=11)
    c = simulate_group(_params(), sample="mixture", size=64, seed=12)
    assert np.array_equal(a.raw, b.raw) and np.array_equal(a.gt, b.gt)
    assert not np.array_equal(a.raw, c.raw)
    assert a.raw.shape == (9, 64, 64) and a.raw.dtype == np.uint16
    assert a.gt.shape == (128, 128) and a.gt.dtype == np.float32


def test_ground_truth_matches_widefield_flux():
    params = _params()
    g = simulate_group(params, sample="vesicles", size=96, seed=5)
    wf = g.raw.astype(float).mean(axis=0) / params.camera.adu_per_photon
    wf -= params.camera.offset_adu / params.camera.adu_per_photon + params.signal.background_photons
    gt_binned = g.gt.reshape(96, 2, 96, 2).mean(axis=(1, 3))
    assert wf.sum() == pytest.approx(gt_binned.sum(), rel=0.02)


@pytest.mark.parametrize("kind", SAMPLE_KINDS)
def test_every_sample_kind(kind):
    g = simulate_group(_params(), sample=kind, size=48, seed=1)
    assert g.gt.max() > 0 and g.raw.max() > g.raw.min()


def test_random_params_cover_ranges_without_aliasing():
    rng = np.random.default_rng(0)
    ranges = PhysicsRanges()
    draws = [random_params(rng, ranges) for _ in range(400)]
    na = [p.optics.na for p in draws]
    photons = [p.signal.peak_photons for p in draws]
    assert min(na) < 1.1 and max(na) > 1.4
    assert min(photons) < 20 and max(photons) > 2000
    assert {p.camera.kind for p in draws} == {"scmos", "emccd"}
    for p in draws:
        assert p.pattern_frequency_per_um <= 0.98 * p.optics.nyquist_per_um + 1e-9
        assert 0.7 <= p.pattern.frequency_fraction <= 0.95


def test_bad_parameters_raise_project_error():
    with pytest.raises(MLSimError, match="NA"):
        Optics(na=3.0)
    with pytest.raises(MLSimError, match="modulation"):
        Pattern(modulation=1.5)
    with pytest.raises(MLSimError, match="sample kind"):
        simulate_group(sample="cells", size=32)
