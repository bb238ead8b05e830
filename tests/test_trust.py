"""Trust maps on simulated groups with known ground truth (issue 14).

The ground truth and a Wiener reconstruction are trusted almost everywhere; a filament that the
sample does not have and fine texture beyond the SIM passband are flagged; over held-out tiles
the map's distrust follows the true error.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from mlsim_live.errors import MLSimError
from mlsim_live.recon.wiener import WienerReconstructor
from mlsim_live.sim import simulate_group
from mlsim_live.sim.simulate import PhysicsRanges, Signal, SIMParams, random_params
from mlsim_live.trust import (
    FLAG_LEVEL,
    CameraNoise,
    TrustMapper,
    TrustSettings,
    TrustStream,
    estimate_noise,
    trust_map,
)

SIZE = 128


def _group(kind: str, photons: float, seed: int = 3):
    params = SIMParams(signal=Signal(peak_photons=photons))
    group = simulate_group(params, kind, SIZE, seed=seed)
    wiener = WienerReconstructor(optics=params.optics)
    estimate = wiener.estimate(group.raw)
    return group, estimate, wiener.reconstruct(group.raw)


@pytest.fixture(scope="module")
def filaments_300():
    return _group("filaments", 300.0)


@pytest.fixture(scope="module")
def mixture_3000():
    return _group("mixture", 3000.0)


def _line_distance(shape: tuple[int, int]) -> np.ndarray:
    """Distance (fine pixels) from a straight line across the image."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.abs(yy - 0.3 * xx - 0.35 * shape[0]) / np.hypot(1.0, 0.3)


def _fake_filament(shape: tuple[int, int]) -> np.ndarray:
    """A straight line across the image (Gaussian profile, 1 fine pixel sigma)."""
    return np.exp(-(_line_distance(shape) ** 2) * (1.0 + 0.09) / 2.0)


def _interior(mask: np.ndarray, border: int = 16) -> np.ndarray:
    out = mask.copy()
    out[:border], out[-border:], out[:, :border], out[:, -border:] = False, False, False, False
    return out


@pytest.mark.parametrize("case", ["filaments_300", "mixture_3000"])
def test_ground_truth_and_wiener_are_trusted_almost_everywhere(case: str, request) -> None:
    group, estimate, wiener = request.getfixturevalue(case)
    noise = estimate_noise(group.raw, estimate)
    for name, image in (("ground truth", group.gt), ("wiener", wiener)):
        result = TrustMapper(estimate, noise=noise).compute(group.raw, image)
        assert result.trust.shape == image.shape and result.trust.dtype == np.float32
        assert 0.0 <= result.trust.min() and result.trust.max() <= 1.0
        assert result.figures.flagged_fraction < 0.05, (name, result.figures)
        assert 0.5 < result.figures.chi_median < 1.3, (name, result.figures)


def test_the_fit_handles_the_units_of_the_reconstruction(filaments_300) -> None:
    """Ground truth in photons, frames in ADU: the fitted gain is the camera's ADU per
    photon (within the uneven illumination), and any rescaling of the image is absorbed."""
    group, estimate, _ = filaments_300
    result = trust_map(group.raw, group.gt, estimate=estimate)
    assert result.figures.gain == pytest.approx(group.params.camera.adu_per_photon, rel=0.2)
    scaled = trust_map(group.raw, 37.0 * group.gt + 5.0, estimate=estimate)
    assert scaled.figures.flagged_fraction == pytest.approx(
        result.figures.flagged_fraction, abs=0.01
    )


def test_a_filament_the_sample_does_not_have_is_flagged(filaments_300) -> None:
    group, estimate, _ = filaments_300
    line = _fake_filament(group.gt.shape)
    fake = group.gt + 0.7 * np.percentile(group.gt, 99.9) * line
    result = TrustMapper(estimate).compute(group.raw, fake)
    on_line = _interior(line > 0.5)
    flagged_on_line = float(np.mean(result.trust[on_line] < FLAG_LEVEL))
    assert flagged_on_line >= 0.9, flagged_on_line
    # flagged where the line is, not everywhere: its footprint is the PSF scale
    far = _interior(_line_distance(line.shape) > 24)
    assert result.figures.flagged_fraction < 0.2
    assert float(np.mean(result.trust[far] < FLAG_LEVEL)) < 0.02


def test_texture_beyond_the_passband_is_flagged_by_the_band_check(filaments_300) -> None:
    group, estimate, _ = filaments_300
    n = group.gt.shape[0]
    _, xx = np.mgrid[:n, :n]
    patch = np.zeros(group.gt.shape, bool)
    patch[n // 4 : n // 2, n // 4 : n // 2] = True
    # 0.93 cycles per camera pixel: beyond fc + |k| in every direction, below the 2x Nyquist
    texture = 0.3 * np.percentile(group.gt, 99.9) * np.cos(2 * np.pi * 0.93 * xx * 0.5)
    fake = group.gt + texture * patch
    result = TrustMapper(estimate).compute(group.raw, fake)
    assert float(np.mean(result.trust[patch] < FLAG_LEVEL)) >= 0.9
    assert result.figures.band_flagged_fraction > 0.04
    # the forward residual cannot see it: no raw frame records those frequencies
    assert result.figures.residual_flagged_fraction < 0.02


def test_distrust_follows_the_true_error_over_held_out_tiles() -> None:
    """Held-out simulated groups (random physics, 200 to 5000 photons, every sample kind),
    reconstructed by the end-to-end model and as widefield; 16 x 16 camera-pixel tiles. The
    true error is the tile's RMSE against the ground truth (each image mapped onto the ground
    truth's scale) in units of the shot noise, ``sqrt(peak photons)``: what raw data can show
    to be wrong. Without that normalization the correlation is lower (0.47 over these
    tiles: at low photon counts large errors are consistent with the data)."""
    pytest.importorskip("onnxruntime")
    from mlsim_live.recon import make_reconstructor

    try:
        rcan = make_reconstructor("rcan")
    except MLSimError as exc:  # pragma: no cover - no model installed
        pytest.skip(str(exc))
    widefield = make_reconstructor("widefield")
    ranges = replace(PhysicsRanges(), peak_photons=(200.0, 5000.0))
    rng = np.random.default_rng(7000001)
    kinds = ("filaments", "beads", "vesicles", "natural", "mixture")
    distrust, error = [], []
    tile, border = 32, 16
    for i in range(8):
        params = random_params(rng, ranges)
        group = simulate_group(params, kinds[i % 5], SIZE, seed=int(rng.integers(1 << 30)))
        estimate = WienerReconstructor(optics=params.optics).estimate(group.raw)
        stream = TrustStream(estimate=estimate)
        scale = np.percentile(group.gt, 99.9) / np.sqrt(params.signal.peak_photons)
        for rec in (rcan, widefield):
            image = rec.reconstruct(group.raw)
            trust = stream.compute(group.raw, image).trust
            design = np.stack([image.ravel(), np.ones(image.size)], axis=1)
            coef = np.linalg.lstsq(design, group.gt.ravel(), rcond=None)[0]
            mapped = image * coef[0] + coef[1]
            n = image.shape[0]
            for y in range(border, n - border - tile + 1, tile):
                for x in range(border, n - border - tile + 1, tile):
                    sl = (slice(y, y + tile), slice(x, x + tile))
                    rmse = float(np.sqrt(np.mean((mapped[sl] - group.gt[sl]) ** 2)))
                    error.append(rmse / scale)
                    distrust.append(1.0 - float(trust[sl].mean()))
    rho = stats.spearmanr(distrust, error).statistic
    print(f"Spearman {rho:.3f} over {len(error)} tiles")
    assert rho >= 0.5, rho


# --------------------------------------------------------------------------------------------
# API behaviour


def test_stream_estimates_once_and_reuses(filaments_300, monkeypatch) -> None:
    group, _, wiener = filaments_300
    import mlsim_live.trust.stream as stream_module

    calls = []
    real = stream_module.estimate_pattern

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(stream_module, "estimate_pattern", counting)
    stream = TrustStream(group.params.optics)
    first = stream.compute(group.raw, wiener)
    second = stream.compute(group.raw, wiener)
    assert len(calls) == 1 and stream.groups == 2
    np.testing.assert_array_equal(first.trust, second.trust)
    assert stream.noise is not None and stream.noise.source == "photon transfer"


def test_bad_shapes_and_values_are_refused_in_one_line(filaments_300) -> None:
    group, estimate, wiener = filaments_300
    mapper = TrustMapper(estimate)
    with pytest.raises(MLSimError, match=r"expected .*2x grid"):
        mapper.compute(group.raw, wiener[:-2])
    with pytest.raises(MLSimError, match="expected the same size"):
        mapper.compute(group.raw[:, :64, :64], wiener[:128, :128])
    bad = wiener.copy()
    bad[3, 3] = np.nan
    with pytest.raises(MLSimError, match="NaN"):
        mapper.compute(group.raw, bad)
    with pytest.raises(MLSimError, match="chi2_flag"):
        TrustSettings(chi2_flag=1.0)


def test_constant_noise_when_the_photon_transfer_cannot_be_fitted(filaments_300) -> None:
    group, estimate, wiener = filaments_300
    noise = CameraNoise.constant(5.0)
    result = TrustMapper(estimate, noise=noise).compute(group.raw, wiener)
    assert result.figures.noise_source == "constant"
    assert np.isfinite(result.trust).all()


def test_live_sink_maps_the_newest_group_off_the_caller_thread(filaments_300) -> None:
    """``on_result`` hands the group over and returns at once; the newest group is mapped,
    the ones it overtook are skipped and counted."""
    import time
    from types import SimpleNamespace

    from mlsim_live.trust.sink import TrustSink

    group, _, wiener = filaments_300
    seen = []
    sink = TrustSink(group.params.optics, on_map=lambda i, key, res: seen.append(i))
    handed = []
    for i in range(6):
        start = time.perf_counter()
        sink.on_result(SimpleNamespace(index=i, key={"time": i}, raw=group.raw, sr=wiener))
        handed.append(time.perf_counter() - start)
    sink.close()
    assert max(handed) < 0.05
    assert seen and seen[-1] == 5 and len(seen) + sink.skipped == 6
    summary = sink.summary()
    assert summary["trust_groups"] == len(seen)
    assert summary["trust_flagged_fraction"]["p95"] < 0.05
