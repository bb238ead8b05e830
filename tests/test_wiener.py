"""Wiener SIM reconstruction against simulated ground truth, and `make_reconstructor`."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from mlsim_live.errors import MLSimError
from mlsim_live.normalization import normalization_for
from mlsim_live.recon import make_reconstructor
from mlsim_live.recon.base import Reconstructor
from mlsim_live.recon.estimate import WIENER_BACKGROUND_PERCENTILE, estimate_background
from mlsim_live.recon.widefield import WidefieldReconstructor
from mlsim_live.recon.wiener import WienerReconstructor, pattern_found
from mlsim_live.sim import Camera, Optics, Pattern, Signal, SIMParams, simulate_group

OPTICS = Optics(na=1.4, wavelength_nm=525.0, pixel_size_um=0.08)


def _params(photons: float, **pattern) -> SIMParams:
    return SIMParams(
        optics=OPTICS,
        pattern=Pattern(
            **(
                {"frequency_fraction": 0.85, "angle_offset_deg": 12.0, "phase_error_rad": 0.1}
                | pattern
            )
        ),
        signal=Signal(
            peak_photons=photons, background_photons=15, haze_fraction=0.05, unevenness=0.1
        ),
        camera=Camera(kind="scmos"),
    )


@pytest.fixture(scope="module")
def bright_group():
    params = _params(3000.0)
    return params, simulate_group(params, sample="filaments", size=128, seed=7)


def _band_correlation(img: np.ndarray, ref: np.ndarray, lo: float, hi: float) -> float:
    """Correlation of two images within an annulus of spatial frequencies (cycles/um here
    given as fractions of the 2x grid, via ``lo``/``hi`` in cycles per 2x pixel)."""
    win = np.hanning(img.shape[0])[:, None] * np.hanning(img.shape[1])[None, :]
    a = np.fft.fft2((img - img.mean()) * win)
    b = np.fft.fft2((ref - ref.mean()) * win)
    fy = np.fft.fftfreq(img.shape[0])[:, None]
    fx = np.fft.fftfreq(img.shape[1])[None, :]
    ring = (np.hypot(fy, fx) >= lo) & (np.hypot(fy, fx) <= hi)
    num = np.sum(a[ring] * np.conj(b[ring])).real
    return float(num / np.sqrt(np.sum(np.abs(a[ring]) ** 2) * np.sum(np.abs(b[ring]) ** 2)))


def _psnr(img: np.ndarray, ref: np.ndarray) -> float:
    """PSNR after the best affine intensity match (reconstructions are in ADU, GT in photons)."""
    design = np.stack([img.ravel(), np.ones(img.size)], axis=1)
    coef, *_ = np.linalg.lstsq(design, ref.ravel(), rcond=None)
    fitted = img * coef[0] + coef[1]
    return float(10 * np.log10(np.ptp(ref) ** 2 / np.mean((fitted - ref) ** 2)))


def test_wiener_recovers_frequencies_beyond_the_widefield_cutoff(bright_group):
    params, group = bright_group
    wiener = WienerReconstructor(params.optics).reconstruct(group.raw)
    widefield = WidefieldReconstructor().reconstruct(group.raw)
    # widefield cutoff in cycles per 2x pixel
    fc = params.optics.cutoff_per_um * params.optics.pixel_size_um / 2
    band = (1.05 * fc, 1.7 * fc)
    assert _band_correlation(wiener, group.gt, *band) > 0.8
    assert abs(_band_correlation(widefield, group.gt, *band)) < 0.1
    # inside the widefield band both follow the ground truth
    assert _band_correlation(wiener, group.gt, 0.1 * fc, 0.9 * fc) > 0.9


def test_wiener_beats_widefield_against_ground_truth(bright_group):
    params, group = bright_group
    wiener = WienerReconstructor(params.optics).reconstruct(group.raw)
    widefield = WidefieldReconstructor().reconstruct(group.raw)
    assert _psnr(wiener, group.gt) > _psnr(widefield, group.gt) + 3.0
    corr_w = np.corrcoef(wiener.ravel(), group.gt.ravel())[0, 1]
    corr_wf = np.corrcoef(widefield.ravel(), group.gt.ravel())[0, 1]
    assert corr_w > corr_wf + 0.05


def test_reuse_and_fixed_estimates(bright_group, caplog):
    params, group = bright_group
    rec = WienerReconstructor(params.optics, reuse_estimate=True)
    with caplog.at_level("INFO", logger="mlsim_live.recon.wiener"):
        first = rec.reconstruct(group.raw)
    assert "SIM pattern" in caplog.text
    est = rec.last_estimate
    assert est is not None and est.shape == (128, 128)
    second = rec.reconstruct(group.raw)
    assert rec.last_estimate.patterns is est.patterns  # geometry reused
    assert rec.last_estimate.snr == pytest.approx(est.snr)  # signal measured again, same group
    np.testing.assert_array_equal(first, second)
    fixed = WienerReconstructor(params.optics, estimate=est).reconstruct(group.raw)
    np.testing.assert_allclose(fixed, first, rtol=1e-5, atol=1e-3 * np.abs(first).max())
    with pytest.raises(MLSimError, match="same frame size"):
        WienerReconstructor(params.optics, estimate=est).reconstruct(group.raw[:, :64, :64])


def test_reuse_waits_for_a_group_where_the_pattern_is_found(bright_group, caplog):
    params, group = bright_group
    rng = np.random.default_rng(3)
    blank = (100 + rng.poisson(20.0, size=group.raw.shape)).astype(np.uint16)  # shutter closed
    rec = WienerReconstructor(params.optics, reuse_estimate=True)
    with caplog.at_level("WARNING", logger="mlsim_live.recon.wiener"):
        rec.reconstruct(blank)
    assert "hardly found" in caplog.text
    blank_estimate = rec.last_estimate
    assert blank_estimate is not None and not pattern_found(blank_estimate)
    real = rec.reconstruct(group.raw)
    good = rec.last_estimate
    assert good is not blank_estimate and pattern_found(good)
    # the second group is reconstructed exactly as by a reconstructor that never saw the blank
    np.testing.assert_array_equal(real, WienerReconstructor(params.optics).reconstruct(group.raw))
    true_k = params.pattern.frequency_fraction * OPTICS.cutoff_per_um * OPTICS.pixel_size_um
    for p in good.patterns:
        assert p.frequency_cycles_per_px == pytest.approx(true_k, rel=0.02)
    # from now on the found estimate is kept, even through another blank group
    rec.reconstruct(blank)
    assert rec.last_estimate.patterns is good.patterns
    np.testing.assert_array_equal(rec.reconstruct(group.raw), real)


def test_reuse_measures_signal_and_wiener_parameter_on_every_group(bright_group):
    """A reused estimate keeps the pattern but not the SNR: a dimmer group (bleaching) gets its
    own, lower SNR and a larger Wiener parameter, as if estimated on its own."""
    from mlsim_live.recon.wiener import wiener_parameter

    params, group = bright_group
    rec = WienerReconstructor(params.optics, reuse_estimate=True)
    rec.reconstruct(group.raw)
    bright = rec.last_estimate
    dim_params = replace(params, signal=replace(params.signal, peak_photons=20.0))
    dim = simulate_group(dim_params, "filaments", 128, seed=5).raw
    rec.reconstruct(dim)
    reused = rec.last_estimate
    assert reused.patterns is bright.patterns
    own = WienerReconstructor(params.optics).estimate(dim)
    assert reused.snr < 0.5 * bright.snr
    assert reused.snr == pytest.approx(own.snr, rel=0.05)
    assert wiener_parameter(reused) > wiener_parameter(bright)


def test_background_rule_is_the_wiener_percentile_of_block_means():
    rng = np.random.default_rng(0)
    frames = rng.normal(200.0, 30.0, size=(9, 64, 64)).astype(np.float32)
    blocks = frames.mean(axis=0).reshape(16, 4, 16, 4).mean(axis=(1, 3))
    assert estimate_background(frames) == pytest.approx(
        float(np.percentile(blocks, WIENER_BACKGROUND_PERCENTILE)), rel=1e-6
    )
    # a rule of its own: not the RCAN normalization's 0.5th percentile of all pixels
    assert estimate_background(frames) != pytest.approx(normalization_for(frames).background)


def test_non_square_frames_without_optics():
    params = _params(2000.0, angle_offset_deg=33.0)
    group = simulate_group(params, sample="vesicles", size=(96, 128), seed=4)
    rec = WienerReconstructor()
    out = rec.reconstruct(group.raw)
    assert isinstance(rec, Reconstructor)
    assert (rec.name, rec.provider, rec.scale) == ("wiener", "numpy", 2)
    assert out.shape == (192, 256) and out.dtype == np.float32
    assert np.isfinite(out).all()
    assert rec.last_estimate is not None and rec.last_estimate.cutoff_source == "data"
    fc = params.optics.cutoff_per_um * params.optics.pixel_size_um / 2
    assert _band_correlation(out, group.gt, 1.05 * fc, 1.6 * fc) > 0.3


def test_bad_parameters_are_refused():
    with pytest.raises(MLSimError, match="positive"):
        WienerReconstructor(wiener_w=0.0)
    with pytest.raises(MLSimError, match="expected one of"):
        WienerReconstructor(apodization="gauss")  # type: ignore[arg-type]
    with pytest.raises(MLSimError, match="expected"):
        WienerReconstructor().reconstruct(np.zeros((9, 32)))


def test_make_reconstructor():
    wf = make_reconstructor("widefield", offset_adu=100.0)
    assert isinstance(wf, WidefieldReconstructor) and wf.offset_adu == 100.0
    wiener = make_reconstructor("Wiener", optics=OPTICS, reuse_estimate=True, wiener_w=0.2)
    assert isinstance(wiener, WienerReconstructor)
    assert wiener.optics == OPTICS and wiener.reuse_estimate and wiener.wiener_w == 0.2
    with pytest.raises(MLSimError, match="unknown"):
        make_reconstructor("deconvolution")
    # the RCAN either lacks its runtime or refuses a model file that does not exist
    with pytest.raises(MLSimError):
        make_reconstructor("rcan", model="/nonexistent/model.onnx")
