"""The prior-fed family (``wiener-rcan``): input layout, training data, engine, fallback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlsim_live.errors import MLSimError
from mlsim_live.recon import make_reconstructor, make_stream_reconstructor
from mlsim_live.recon.prior import prior_input, shuffle2, unshuffle2
from mlsim_live.recon.wiener import WienerReconstructor
from mlsim_live.sim import Optics, Signal, SIMParams, simulate_group
from tests.onnx_models import write_conv_sr

OPTICS = Optics(na=1.3, wavelength_nm=525.0, pixel_size_um=0.07)


def test_unshuffle_is_the_inverse_of_shuffle_and_keeps_subpixels():
    img = np.arange(6 * 8, dtype=np.float32).reshape(6, 8)
    ch = unshuffle2(img)
    assert ch.shape == (4, 3, 4)
    assert ch[1, 0, 0] == img[0, 1] and ch[2, 0, 0] == img[1, 0] and ch[3, 2, 3] == img[5, 7]
    np.testing.assert_array_equal(shuffle2(ch), img)
    with pytest.raises(MLSimError, match="even"):
        unshuffle2(np.zeros((5, 8)))


def test_prior_input_layout_and_units():
    from mlsim_live.normalization import normalization_for

    group = simulate_group(SIMParams(optics=OPTICS), "filaments", 32, seed=0).raw
    wiener = np.full((64, 64), 50.0, np.float32)
    norm = normalization_for(group)
    x = prior_input(group, wiener, norm)
    assert x.shape == (13, 32, 32) and x.dtype == np.float32
    np.testing.assert_allclose(x[:9], norm.apply(group))
    np.testing.assert_allclose(x[9:], 50.0 / norm.scale, rtol=1e-6)
    with pytest.raises(MLSimError, match="twice the frame size"):
        prior_input(group, wiener[:32], norm)


def _identity_prior_model(folder: Path) -> Path:
    """An ONNX 'network' that returns its prior channels, pixel-shuffled: the Wiener image."""
    weight = np.zeros((4, 13, 1, 1), np.float32)
    for c in range(4):
        weight[c, 9 + c, 0, 0] = 1.0
    path = write_conv_sr(folder / "prior_identity.onnx", weight)
    card = {"architecture": {"type": "RCAN", "prior": "wiener", "scale": 2}, "scale": 2}
    path.with_suffix(".json").write_text(json.dumps(card))
    return path


def test_engine_feeds_the_wiener_reconstruction_on_the_camera_grid(tmp_path):
    """A model that passes its prior through reproduces the Wiener reconstruction exactly:
    the input layout of training and inference agree, and the output is in input units."""
    model = _identity_prior_model(tmp_path)
    group = simulate_group(SIMParams(optics=OPTICS), "filaments", 64, seed=2).raw
    rec = make_reconstructor("rcan", model=model, optics=OPTICS)  # the card decides
    assert rec.name == "wiener-rcan:prior_identity.onnx"
    out = rec.reconstruct(group)
    expected = WienerReconstructor(optics=OPTICS).reconstruct(group)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-3 * np.abs(expected).max())
    assert rec.fallback_groups == 0


def test_groups_without_a_found_pattern_go_to_the_end_to_end_model(tmp_path, caplog):
    model = _identity_prior_model(tmp_path)
    e2e = write_conv_sr(tmp_path / "e2e.onnx", np.ones((4, 9, 1, 1), np.float32) / 9)
    rec = make_reconstructor("wiener-rcan", model=model, fallback=e2e, require_pattern=True)
    blank = (100 + np.random.default_rng(0).poisson(20.0, (9, 48, 48))).astype(np.uint16)
    with caplog.at_level("WARNING"):
        out = rec.reconstruct(blank)
        rec.reconstruct(blank)
    assert out.shape == (96, 96) and np.isfinite(out).all()
    assert rec.fallback_groups == 2
    assert caplog.text.count("end-to-end model") == 1  # said once while the reason stays
    good = simulate_group(SIMParams(optics=OPTICS), "filaments", 48, seed=1).raw
    rec.reconstruct(good)
    assert rec.fallback_groups == 2


def test_wiener_rcan_refuses_an_end_to_end_model(tmp_path):
    e2e = write_conv_sr(tmp_path / "e2e.onnx", np.ones((4, 9, 1, 1), np.float32) / 9)
    with pytest.raises(MLSimError, match="not prior-fed"):
        make_reconstructor("wiener-rcan", model=e2e)


def test_stream_reconstructor_reuses_the_pattern_and_measures_signal_per_group(tmp_path):
    model = _identity_prior_model(tmp_path)
    rec = make_stream_reconstructor("wiener-rcan", model=model, optics=OPTICS)
    assert rec.wiener.reuse_estimate
    bright = SIMParams(optics=OPTICS, signal=Signal(peak_photons=2000.0))
    dim = SIMParams(optics=OPTICS, signal=Signal(peak_photons=30.0))
    rec.reconstruct(simulate_group(bright, "filaments", 64, seed=3).raw)
    first = rec.last_estimate
    rec.reconstruct(simulate_group(dim, "filaments", 64, seed=4).raw)
    assert rec.last_estimate.patterns is first.patterns
    assert rec.last_estimate.snr < 0.5 * first.snr


# ------------------------------------------------------------------------------ torch side


@pytest.mark.torch
def test_prior_model_skip_and_pixel_shuffle_agree_with_numpy():
    torch = pytest.importorskip("torch")
    from mlsim_live.model.rcan import build_model

    model = build_model("prior-tiny").eval()
    assert model.config.in_channels == 13
    with torch.no_grad():
        model.tail.weight.zero_()
        model.tail.bias.zero_()
        x = torch.rand(1, 13, 12, 10)
        out = model(x)[0, 0].numpy()
    np.testing.assert_allclose(out, shuffle2(x[0, 9:].numpy()), rtol=1e-6)


@pytest.mark.torch
def test_prior_training_examples_and_their_rotations_keep_the_layout():
    pytest.importorskip("torch")
    from mlsim_live.model.data import DataConfig, Sampler, dihedral
    from mlsim_live.sim import realistic_ranges

    cfg = DataConfig(patch_px=32, ranges=realistic_ranges(), prior="wiener")
    x, y = Sampler(cfg, np.random.default_rng(0)).draw()
    assert x.shape == (13, 32, 32) and y.shape == (1, 64, 64)
    for op in range(8):
        xr, yr = dihedral(x, y, op)
        k, mirror = op % 4, op >= 4
        prior = np.rot90(shuffle2(x[9:]), k)
        target = np.rot90(y[0], k)
        if mirror:
            prior, target = prior[:, ::-1], target[:, ::-1]
        np.testing.assert_array_equal(shuffle2(xr[9:]), prior)
        np.testing.assert_array_equal(yr[0], target)


@pytest.mark.torch
def test_prior_target_is_the_ground_truth_in_the_frames_units():
    """Wiener's output and the target share units: their least-squares ratio is near 1."""
    pytest.importorskip("torch")
    from mlsim_live.model.data import make_example
    from mlsim_live.sim import random_params

    rng = np.random.default_rng(5)
    ratios = []
    for _ in range(4):
        params = random_params(rng)
        params = SIMParams(
            params.optics, params.pattern, Signal(peak_photons=3000.0), params.camera
        )
        x, y = make_example(params, "filaments", 64, 2, rng, flip=False, prior="wiener")
        prior = shuffle2(x[9:])
        ratios.append(float(np.sum(prior * y[0]) / np.sum(y[0] ** 2)))
    assert 0.7 < np.median(ratios) < 1.6


def test_keep_measured_background_takes_coarse_intensity_from_the_measurement():
    """The network's detail stays (scaled by one gain onto the Wiener detail); scales above
    sigma come from the Wiener image: a removed haze comes back, detail is not blurred."""
    from mlsim_live.recon.prior import coarse_part, keep_measured_background

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:128, :128]
    haze = 50.0 * np.exp(-((yy - 40) ** 2 + (xx - 90) ** 2) / (2 * 30.0**2))
    detail = np.zeros((128, 128), np.float32)
    detail[::16, :] = 10.0  # thin lines
    wiener = (haze + detail + rng.normal(0, 0.5, detail.shape)).astype(np.float32)
    network = (2.0 * detail).astype(np.float32)  # no haze, twice the contrast
    out = keep_measured_background(network, wiener, sigma_px=12.0)
    np.testing.assert_allclose(
        coarse_part(out, 24.0), coarse_part(wiener, 24.0), atol=4.0
    )  # haze 50
    fine = out - coarse_part(out, 12.0)
    target = detail - coarse_part(detail, 12.0)
    assert np.corrcoef(fine.ravel(), target.ravel())[0, 1] > 0.8
    assert np.std(fine) == pytest.approx(np.std(target), rel=0.25)  # gain about 1/2 found
    assert keep_measured_background(np.zeros_like(wiener), wiener, 12.0).shape == (128, 128)


def test_coarse_part_matches_a_gaussian_filter_away_from_borders():
    from scipy import ndimage

    from mlsim_live.recon.prior import coarse_part

    img = np.random.default_rng(1).random((200, 170)).astype(np.float32) * 10
    img += np.linspace(0, 50, 170)[None, :]
    ref = ndimage.gaussian_filter(img, 16.0, mode="reflect")
    out = coarse_part(img, 16.0)
    assert out.shape == img.shape
    assert np.abs(out - ref)[40:-40, 40:-40].max() < 0.3


_SHIPPED = Path(__file__).resolve().parents[1] / "models" / "wiener_rcan_default.onnx"
_LARGE = _SHIPPED.with_name("wiener_rcan_large.onnx")


@pytest.mark.skipif(not _LARGE.is_file(), reason="the large wiener-rcan model is not installed")
def test_the_large_prior_model_ships_beside_the_default_and_runs_with_model():
    """The previous default (2 x 4 x 32 with channel attention) stays available through
    ``--model``: its card matches its file, and it is a prior-fed model the method accepts."""
    import hashlib

    from mlsim_live.model.rcan import preset_config

    card = json.loads(_LARGE.with_suffix(".json").read_text())
    assert card["sha256"] == hashlib.sha256(_LARGE.read_bytes()).hexdigest()
    assert card["architecture"]["prior"] == "wiener" and card["architecture"]["n_feats"] == 32
    default = json.loads(_SHIPPED.with_suffix(".json").read_text())["architecture"]
    assert default["n_feats"] == preset_config("prior-fast").n_feats
    model = make_reconstructor("wiener-rcan", model=_LARGE, optics=OPTICS)
    assert model.name == "wiener-rcan:wiener_rcan_large.onnx"
    group = simulate_group(SIMParams(optics=OPTICS), "filaments", 48, seed=3).raw
    assert model.reconstruct(group).shape == (96, 96)


@pytest.mark.skipif(not _SHIPPED.is_file(), reason="the wiener-rcan model is not installed")
def test_shipped_wiener_rcan_beats_wiener_against_simulated_ground_truth():
    """Guard for the shipped default: on simulated filaments at 100 and 300 photons it is closer
    to the ground truth than the Wiener reconstruction it refines (PSNR after an affine fit);
    at 10 photons the group holds too little fine structure and gets the widefield image."""
    from mlsim_live.metrics import psnr

    def fitted_psnr(img: np.ndarray, ref: np.ndarray) -> float:
        design = np.stack([img.ravel(), np.ones(img.size)], 1)
        coef, *_ = np.linalg.lstsq(design, ref.ravel(), rcond=None)
        return psnr((design @ coef).reshape(ref.shape), ref)

    wiener = make_reconstructor("wiener", optics=OPTICS)
    model = make_reconstructor("wiener-rcan", optics=OPTICS)
    # auto: the int8 copy its card records as accurate, where the CPU has 8-bit dot products
    from mlsim_live.engine import precision as prec

    int8 = prec.int8_unsupported() is None
    assert model.name == f"wiener-rcan:wiener_rcan_default{'.int8' if int8 else ''}.onnx"
    for photons in (100.0, 300.0):
        for seed in range(3):
            params = SIMParams(optics=OPTICS, signal=Signal(peak_photons=photons))
            group = simulate_group(params, "filaments", 128, seed=seed)
            gain = fitted_psnr(model.reconstruct(group.raw), group.gt) - fitted_psnr(
                wiener.reconstruct(group.raw), group.gt
            )
            assert gain > 0.0, (photons, seed, gain)
    assert model.low_signal_groups == 0
    dim = simulate_group(
        SIMParams(optics=OPTICS, signal=Signal(peak_photons=10.0)), "filaments", 128, 0
    )
    widefield = make_reconstructor("widefield").reconstruct(dim.raw)
    np.testing.assert_array_equal(model.reconstruct(dim.raw), widefield)
    assert model.low_signal_groups == 1 and model.fallback_groups == 1


def test_fine_structure_snr_is_zero_on_noise_and_grows_with_the_signal():
    from mlsim_live.recon.measure import fine_structure_snr

    cutoff = OPTICS.cutoff_per_um * OPTICS.pixel_size_um
    rng = np.random.default_rng(0)
    noise = rng.poisson(5.0, (9, 256, 256)).astype(np.float32) + 100
    assert abs(fine_structure_snr(noise, cutoff, 100.0)) < 0.05
    values = []
    for photons in (100.0, 1000.0):
        params = SIMParams(optics=OPTICS, signal=Signal(peak_photons=photons))
        group = simulate_group(params, "filaments", 256, seed=1)
        values.append(fine_structure_snr(group.raw, cutoff, float(np.percentile(group.raw, 0.5))))
    assert 0.3 < values[0] < values[1]


@pytest.mark.skipif(not _SHIPPED.is_file(), reason="the wiener-rcan model is not installed")
def test_low_signal_guard_can_be_turned_off_and_refuses_a_negative_threshold():
    model = make_reconstructor("wiener-rcan", optics=OPTICS, min_fine_snr=0.0)
    dim = simulate_group(
        SIMParams(optics=OPTICS, signal=Signal(peak_photons=10.0)), "filaments", 64, 0
    )
    model.reconstruct(dim.raw)
    assert model.low_signal_groups == 0
    with pytest.raises(MLSimError, match="min_fine_snr"):
        make_reconstructor("wiener-rcan", optics=OPTICS, min_fine_snr=-1.0)


@pytest.mark.skipif(not _SHIPPED.is_file(), reason="the wiener-rcan model is not installed")
def test_the_measurement_weighs_more_as_the_fine_structure_snr_grows():
    from mlsim_live.recon.measure import fine_structure_snr

    blended = make_reconstructor("wiener-rcan", optics=OPTICS)
    network = make_reconstructor("wiener-rcan", optics=OPTICS, wiener_weight_snr=0.0)
    assert blended.wiener_weight(3.0) == pytest.approx(0.5)
    assert blended.wiener_weight(None) == 0.0 and blended.wiener_weight(-1.0) == 0.0
    assert network.wiener_weight(100.0) == 0.0
    weights = []
    for photons in (100.0, 1000.0):
        params = SIMParams(optics=OPTICS, signal=Signal(peak_photons=photons))
        group = simulate_group(params, "filaments", 128, seed=2)
        out = blended.reconstruct(group.raw)
        est = blended.last_estimate
        weight = blended.wiener_weight(
            fine_structure_snr(group.raw, est.cutoff_cycles_per_px, est.background_adu)
        )
        wiener = WienerReconstructor(optics=OPTICS).reconstruct(group.raw)
        expected = weight * wiener + (1 - weight) * network.reconstruct(group.raw)
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-3 * float(np.abs(out).max()))
        weights.append(weight)
    assert 0 < weights[0] < weights[1] and weights[1] > 0.8
    with pytest.raises(MLSimError, match="wiener_weight_snr"):
        make_reconstructor("wiener-rcan", optics=OPTICS, wiener_weight_snr=-1.0)
