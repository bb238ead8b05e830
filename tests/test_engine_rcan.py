"""The ONNX Runtime RCAN reconstructor: shapes, normalization, tiling, bad models, fallback."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from onnx_models import write_conv_sr

from mlsim_live.errors import MLSimError
from mlsim_live.normalization import normalization_for
from mlsim_live.recon.base import Reconstructor

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


from mlsim_live.engine.rcan import RCANReconstructor  # noqa: E402
from mlsim_live.engine.session import fp16_model  # noqa: E402


def conv_model(path: Path, in_channels: int = 9, scale: int = 2, seed: int = 0) -> Path:
    """A one-layer 'super-resolution' ONNX model: 3x3 conv to scale^2 channels, DepthToSpace."""
    rng = np.random.default_rng(seed)
    weight = (rng.standard_normal((scale * scale, in_channels, 3, 3)) * 0.2).astype(np.float32)
    bias = rng.standard_normal(scale * scale).astype(np.float32) * 0.01
    return write_conv_sr(path, weight, bias, scale=scale)


def sim_group(size: tuple[int, int] = (64, 64), seed: int = 0) -> np.ndarray:
    """A camera-like group: offset, signal and Poisson noise, uint16."""
    rng = np.random.default_rng(seed)
    signal = rng.gamma(2.0, 40.0, size=(9, *size))
    return (100 + rng.poisson(signal)).astype(np.uint16)


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    return conv_model(tmp_path / "conv_sr.onnx")


@pytest.fixture
def torch_rcan_path(tmp_path: Path) -> Path:
    """The tiny RCAN preset (channel attention, pixel shuffle) exported with its model card."""
    torch = pytest.importorskip("torch")
    from mlsim_live.model.export import export_onnx
    from mlsim_live.model.rcan import build_model

    torch.manual_seed(0)
    path = tmp_path / "tiny_rcan.onnx"
    export_onnx(build_model("tiny"), path, parity_sizes=(32,))
    return path


def test_protocol_name_provider_scale(model_path: Path) -> None:
    recon = RCANReconstructor(model_path, provider="cpu")
    assert isinstance(recon, Reconstructor)
    assert recon.name == "rcan:conv_sr.onnx"
    assert recon.provider == "CPUExecutionProvider"
    assert recon.scale == 2
    assert recon.warmup_ms is not None and recon.warmup_ms >= 0
    assert RCANReconstructor(model_path, warmup=False).warmup_ms is None


def test_output_equals_direct_onnxruntime_with_normalization(model_path: Path) -> None:
    group = sim_group((64, 64))
    recon = RCANReconstructor(model_path, provider="cpu", warmup=False)
    out = recon.reconstruct(group)
    norm = normalization_for(group)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    direct = session.run(None, {"input": norm.apply(group)[None]})[0][0, 0]
    assert out.dtype == np.float32 and out.shape == (128, 128)
    np.testing.assert_allclose(out, norm.invert(direct), rtol=1e-5, atol=1e-3)


def test_given_background_keeps_the_percentile_scale_rule() -> None:
    group = sim_group((64, 64))
    auto = normalization_for(group)
    assert normalization_for(group, background=auto.background) == auto
    given = normalization_for(group, background=90.0)
    high = float(np.percentile(group.astype(np.float64), 99.9))
    assert given.background == 90.0
    assert given.scale == pytest.approx(high - 90.0, rel=1e-9)
    as_float = normalization_for(group.astype(np.float32), background=90.0)
    assert as_float.background == 90.0
    assert as_float.scale == pytest.approx(given.scale, rel=1e-5)


def test_offset_is_the_normalization_background(model_path: Path) -> None:
    from mlsim_live.recon import make_reconstructor

    group = sim_group((64, 64))  # camera offset 100 ADU
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    outputs = {}
    for offset in (None, 80.0, 100.0):
        recon = make_reconstructor("rcan", model=model_path, offset_adu=offset, warmup=False)
        outputs[offset] = out = recon.reconstruct(group)
        norm = normalization_for(group, background=offset)
        expected = norm.invert(session.run(None, {"input": norm.apply(group)[None]})[0][0, 0])
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-3)
    # the model has a bias and its weights do not sum to zero: the offset shows in the output
    assert not np.allclose(outputs[80.0], outputs[100.0], atol=1e-2)
    assert not np.allclose(outputs[None], outputs[80.0], atol=1e-2)
    with pytest.raises(MLSimError, match="expected a finite number"):
        RCANReconstructor(model_path, warmup=False, offset_adu=float("nan"))


@pytest.mark.parametrize("shape", [(65, 67), (100, 130), (64, 64), (33, 200)])
def test_any_size_is_padded_and_cropped_back(model_path: Path, shape: tuple[int, int]) -> None:
    group = sim_group(shape, seed=1)
    recon = RCANReconstructor(model_path, warmup=False)
    out = recon.reconstruct(group)
    assert out.shape == (2 * shape[0], 2 * shape[1])
    # away from the padded border, the result is the direct run on the unpadded frame
    norm = normalization_for(group)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    direct = norm.invert(session.run(None, {"input": norm.apply(group)[None]})[0][0, 0])
    inner = (slice(0, 2 * shape[0] - 2), slice(0, 2 * shape[1] - 2))
    np.testing.assert_allclose(out[inner], direct[inner], rtol=1e-5, atol=1e-3)


def test_scale_one_model(tmp_path: Path) -> None:
    recon = RCANReconstructor(conv_model(tmp_path / "s1.onnx", scale=1), warmup=False)
    assert recon.scale == 1
    assert recon.reconstruct(sim_group((65, 67))).shape == (65, 67)


def test_tiled_equals_untiled_for_a_local_model(model_path: Path) -> None:
    group = sim_group((200, 150), seed=2)
    whole = RCANReconstructor(model_path, warmup=False).reconstruct(group)
    tiled = RCANReconstructor(model_path, tile_size=64, tile_overlap=16, warmup=False)
    out = tiled.reconstruct(group)
    assert out.shape == whole.shape
    np.testing.assert_allclose(out, whole, rtol=1e-4, atol=1e-4 * float(np.abs(whole).max()))


def test_tiled_vs_untiled_rcan_is_close(torch_rcan_path: Path) -> None:
    """With channel attention (a global mean per tile) tiles differ, but only slightly."""
    group = sim_group((192, 160), seed=3)
    whole = RCANReconstructor(torch_rcan_path, warmup=False).reconstruct(group)
    out = RCANReconstructor(
        torch_rcan_path, tile_size=96, tile_overlap=24, warmup=False
    ).reconstruct(group)
    rel = float(np.abs(out - whole).max() / np.abs(whole).max())
    print(f"tiled vs untiled (tiny RCAN, tiles 96/24): max abs diff {rel:.2e} of the output max")
    assert rel < 1e-4


def test_default_model_is_used_when_none_given(
    model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlsim_live.paths

    monkeypatch.setattr(mlsim_live.paths, "default_model_path", lambda method="rcan": model_path)
    recon = RCANReconstructor(warmup=False)
    assert recon.name == f"rcan:{model_path.name}"


def test_missing_default_model_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlsim_live.paths

    monkeypatch.setattr(mlsim_live.paths, "models_dir", lambda: tmp_path)
    with pytest.raises(MLSimError, match="default model"):
        RCANReconstructor()


def test_missing_model_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    with pytest.raises(MLSimError, match=r"nope\.onnx does not exist; expected an ONNX model"):
        RCANReconstructor(missing)


@pytest.mark.parametrize("content", [b"", b"this is not a model\n" * 10, b"\x08\x07garbage"])
def test_not_onnx_file(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    with pytest.raises(MLSimError, match=r"bad\.onnx.*expected an ONNX model"):
        RCANReconstructor(bad)


def test_folder_instead_of_model(tmp_path: Path) -> None:
    with pytest.raises(MLSimError, match="is a folder"):
        RCANReconstructor(tmp_path)


def test_wrong_number_of_input_channels(tmp_path: Path) -> None:
    path = conv_model(tmp_path / "rgb.onnx", in_channels=3)
    with pytest.raises(MLSimError, match=r"rgb\.onnx takes 3 input channels; expected 9"):
        RCANReconstructor(path)


def test_bad_groups_are_rejected(model_path: Path) -> None:
    recon = RCANReconstructor(model_path, warmup=False)
    with pytest.raises(MLSimError, match=r"expected \(9, H, W\)"):
        recon.reconstruct(np.zeros((8, 64, 64), dtype=np.uint16))
    bad = sim_group().astype(np.float32)
    bad[0, 0, 0] = np.nan
    with pytest.raises(MLSimError, match="NaN"):
        recon.reconstruct(bad)


def test_cuda_request_falls_back_to_cpu_with_warning(
    model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    with caplog.at_level(logging.INFO, logger="mlsim_live.engine"):
        recon = RCANReconstructor(model_path, provider="cuda", fp16=True, warmup=False)
    assert recon.provider == "CPUExecutionProvider"
    assert recon.fp16 is False
    assert any(r.levelno == logging.WARNING and "CUDA" in r.message for r in caplog.records)
    chosen = [r for r in caplog.records if "ONNX Runtime provider:" in r.message]
    assert len(chosen) == 1 and chosen[0].levelno == logging.INFO
    assert recon.reconstruct(sim_group()).shape == (128, 128)


def test_model_card_scale_and_sha256(model_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    card = model_path.with_suffix(".json")
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    card.write_text(json.dumps({"scale": 2, "sha256": digest, "default": True}))
    with caplog.at_level(logging.WARNING, logger="mlsim_live.engine"):
        recon = RCANReconstructor(model_path, warmup=False)
    assert recon.card["sha256"] == digest and not caplog.records
    card.write_text(json.dumps({"scale": 1, "sha256": "0" * 64}))
    with caplog.at_level(logging.WARNING, logger="mlsim_live.engine"):
        recon = RCANReconstructor(model_path, warmup=False)
    messages = " ".join(r.message for r in caplog.records)
    assert "sha256" in messages and "scale 1" in messages
    assert recon.scale == 2  # the model itself decides


def test_bad_tile_settings(model_path: Path) -> None:
    with pytest.raises(MLSimError, match="tile size"):
        RCANReconstructor(model_path, tile_size=40, tile_overlap=32, warmup=False)


def test_fp16_copy_matches_fp32(model_path: Path) -> None:
    converted = fp16_model(model_path)
    assert converted is not None
    model, description = converted
    assert "fp16" in description
    fp16_session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    fp32_session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 9, 32, 32)).astype(np.float32)
    a = fp16_session.run(None, {"input": x})[0]
    b = fp32_session.run(None, {"input": x})[0]
    assert a.dtype == np.float32  # I/O stay float32
    np.testing.assert_allclose(a, b, atol=5e-3 * float(np.abs(b).max()))
    # a sibling NAME_fp16.onnx (from `mlsim-live export --fp16`) is preferred
    sibling = model_path.with_name("conv_sr_fp16.onnx")
    sibling.write_bytes(model if isinstance(model, bytes) else Path(model).read_bytes())
    assert fp16_model(model_path) == (str(sibling), sibling.name)


def test_make_reconstructor_builds_rcan(model_path: Path) -> None:
    recon_pkg = pytest.importorskip("mlsim_live.recon")
    make = getattr(recon_pkg, "make_reconstructor", None)
    if make is None:
        pytest.skip("mlsim_live.recon.make_reconstructor is not written yet")
    recon = make("rcan", model=model_path)
    assert isinstance(recon, RCANReconstructor)
    assert recon.reconstruct(sim_group()).shape == (128, 128)


def test_reconstructor_counts_out_of_distribution_groups(
    model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from mlsim_live.engine.ood import TrainingRanges
    from mlsim_live.sim import (
        Camera,
        Optics,
        Pattern,
        PhysicsRanges,
        Signal,
        SIMParams,
        simulate_group,
    )

    def group(frequency_fraction: float) -> np.ndarray:
        params = SIMParams(
            optics=optics,
            pattern=Pattern(frequency_fraction=frequency_fraction, modulation=0.8),
            signal=Signal(peak_photons=1000, background_photons=20),
            camera=Camera(kind="scmos", offset_adu=100, gain_adu_per_e=0.5, read_noise_e=1.5),
        )
        return simulate_group(params, sample="filaments", size=128, seed=0).raw

    optics = Optics(na=1.4, wavelength_nm=525, pixel_size_um=0.08)
    ranges = PhysicsRanges().to_dict()
    model_path.with_suffix(".json").write_text(
        json.dumps({"scale": 2, "training": {"data": {"ranges": ranges}}})
    )
    recon = RCANReconstructor(model_path, warmup=False, optics=optics, ood_every=1)
    assert recon.training_ranges == TrainingRanges.from_dict(ranges)
    with caplog.at_level(logging.WARNING, logger="mlsim_live.engine"):
        assert recon.is_out_of_distribution(group(0.5))
    assert any("outside the training range" in r.message for r in caplog.records)
    assert recon.check_ood(group(0.85)) == []
    # one estimate in ``ood_every``: the verdict holds until then, unless a fresh start
    caplog.clear()
    sparse = RCANReconstructor(model_path, warmup=False, optics=optics, ood_every=10)
    with caplog.at_level(logging.WARNING, logger="mlsim_live.engine"):
        assert sparse.check_ood(group(0.5), warn=False)
        assert sparse.check_ood(group(0.85), warn=False)  # the last verdict
        assert sparse.check_ood(group(0.85), warn=False, fresh=True) == []
    assert not any("outside the training range" in r.message for r in caplog.records)
    # without ranges in the card the check is off
    model_path.with_suffix(".json").write_text(json.dumps({"scale": 2}))
    assert RCANReconstructor(model_path, warmup=False, optics=optics).check_ood(group(0.5)) == []


def test_io_binding_path_matches_plain_run(model_path: Path) -> None:
    """The GPU path's pre-allocated, re-used I/O buffers, exercised with CPU buffers."""
    recon = RCANReconstructor(model_path, provider="cpu", warmup=False)
    plain = [recon.reconstruct(sim_group(shape, seed=4)) for shape in ((64, 64), (65, 67))]
    session = recon.session
    session.bind_device = "cpu"
    bound = [recon.reconstruct(sim_group(shape, seed=4)) for shape in ((64, 64), (65, 67))]
    assert session._bound_shape == (1, 9, 72, 72)  # re-allocated when the shape changed
    again = recon.reconstruct(sim_group((65, 67), seed=4))
    for a, b in zip(plain, bound):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(again, bound[1])


def test_cuda_matches_cpu_when_a_gpu_is_present(model_path: Path) -> None:
    """Runs on GPU machines only (scripts/gpu_check.sh); skipped in CI."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("no CUDA execution provider")
    group = sim_group((100, 130), seed=5)
    cpu = RCANReconstructor(model_path, provider="cpu", warmup=False).reconstruct(group)
    gpu = RCANReconstructor(model_path, provider="cuda", warmup=(100, 130))
    if gpu.provider != "CUDAExecutionProvider":
        pytest.skip(f"CUDA could not start here ({gpu.provider})")
    np.testing.assert_allclose(gpu.reconstruct(group), cpu, atol=1e-3 * float(np.abs(cpu).max()))
    half = RCANReconstructor(model_path, provider="cuda", fp16=True, warmup=False)
    assert half.fp16
    np.testing.assert_allclose(half.reconstruct(group), cpu, atol=2e-2 * float(np.abs(cpu).max()))
