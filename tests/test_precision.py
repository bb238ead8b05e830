"""Inference precision: CPU instruction checks, the card's per-precision figures, refusals,
``auto``'s choice, int8 parity of a tiny model quantized here, and the roofline's FLOP count."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlsim_live.engine import precision as prec
from mlsim_live.errors import MLSimError

VNNI = frozenset({"avx2", "fma", "avx512_vnni"})
NO_VNNI = frozenset({"avx2", "fma"})


def fake_model(tmp_path: Path, entries: dict | None = None, int8_file: bool = True) -> Path:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    if int8_file:
        prec.variant_path(model, prec.INT8).write_bytes(b"x")
    card = {"precisions": entries} if entries is not None else {}
    model.with_suffix(".json").write_text(json.dumps(card))
    return model


@pytest.fixture
def cpu(monkeypatch):
    """Set this CPU's flags for a test."""

    def use(flags: frozenset[str]) -> None:
        monkeypatch.setattr(prec, "cpu_flags", lambda: flags)

    return use


def test_instruction_sets_and_variant_names(cpu):
    assert prec.instruction_sets(VNNI)["int8"] == ["avx512_vnni"]
    assert prec.instruction_sets(NO_VNNI)["int8"] == []
    assert prec.variant_path(Path("a/m.onnx"), "int8") == Path("a/m.int8.onnx")
    assert prec.variant_path(Path("a/m.onnx"), "fp32") == Path("a/m.onnx")
    cpu(NO_VNNI)
    assert "lacks" in prec.int8_unsupported()
    cpu(VNNI)
    assert prec.int8_unsupported() is None


def test_refusals_say_why(tmp_path, cpu):
    cpu(VNNI)
    with pytest.raises(MLSimError, match="bf16 is refused"):
        prec.resolve_precision(fake_model(tmp_path, {}), {}, "bf16")
    model = fake_model(tmp_path, None)
    with pytest.raises(MLSimError, match="no int8 entry"):
        prec.resolve_precision(model, {}, "int8")
    entry = {"int8": {"psnr_delta_db": -0.01, "speedup_vs_fp32": 2.0}}
    cpu(NO_VNNI)
    with pytest.raises(MLSimError, match="lacks 8-bit dot-product"):
        prec.resolve_precision(model, {"precisions": entry}, "int8")
    cpu(VNNI)
    missing = fake_model(tmp_path / "", entry, int8_file=False)
    prec.variant_path(missing, "int8").unlink(missing_ok=True)
    with pytest.raises(MLSimError, match="missing"):
        prec.resolve_precision(missing, {"precisions": entry}, "int8")
    with pytest.raises(MLSimError, match="unknown"):
        prec.check_precision_name("fp8")


@pytest.mark.parametrize(
    ("int8", "expected"),
    [
        ({"psnr_delta_db": -0.05, "speedup_vs_fp32": 2.5}, "int8"),
        ({"psnr_delta_db": -0.2, "speedup_vs_fp32": 2.5}, "fp32"),  # loses > 0.1 dB
        ({"psnr_delta_db": 0.0, "speedup_vs_fp32": 2.5, "judge_frc_change": 0.08}, "fp32"),
        ({"psnr_delta_db": 0.0, "speedup_vs_fp32": 0.9}, "fp32"),  # accurate but slower
        ({"speedup_vs_fp32": 3.0}, "fp32"),  # no accuracy recorded
    ],
)
def test_auto_takes_the_fastest_accurate_precision(tmp_path, cpu, int8, expected):
    cpu(VNNI)
    card = {"precisions": {"fp32": {}, "int8": int8}}
    model = fake_model(tmp_path, card["precisions"])
    choice = prec.resolve_precision(model, card, "auto")
    assert choice.precision == expected
    assert choice.path == prec.variant_path(model, expected)
    cpu(NO_VNNI)  # the same card on a CPU without VNNI: fp32
    assert prec.resolve_precision(model, card, "auto").precision == "fp32"
    # on a GPU provider auto stays fp32
    assert prec.resolve_precision(model, card, "auto", on_gpu=True).precision == "fp32"


@pytest.fixture(scope="module")
def tiny_prior_int8(tmp_path_factory):
    """A random-weight prior-fed tiny model, exported and quantized here (never shipped)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from mlsim_live.engine.quantize import QuantizeConfig, make_int8
    from mlsim_live.model.export import export_onnx
    from mlsim_live.model.rcan import build_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("prior") / "tiny_prior.onnx"
    export_onnx(build_model("prior-tiny").eval(), path, parity_sizes=(32,))
    config = QuantizeConfig(
        calibration_size_px=48, check_size_px=64, check_per_level=1, speed_size_px=64
    )
    entry = make_int8(path, config)
    return path, entry


def test_bench_live_rows_say_which_precision_ran(tiny_prior_int8, tmp_path, capsys):
    from mlsim_live.cli import main

    path, _ = tiny_prior_int8
    out = tmp_path / "live.json"
    args = ["bench", "--live", "--method", "wiener-rcan", "--model", str(path), "--size", "32"]
    args += ["--groups", "2", "--policy", "all", "--frame-ms", "1", "--stages", "1"]
    assert main([*args, "--precision", "fp32", "--json", str(out)]) == 0, capsys.readouterr().err
    assert json.loads(out.read_text())["precision"] == "fp32"
    if prec.int8_unsupported() is None:
        assert main([*args, "--precision", "int8", "--json", str(out), "--overwrite"]) == 0
        report = json.loads(out.read_text())
        assert report["precision"] == "int8" and "int8" in report["model"]
    wide = ["bench", "--live", "--method", "widefield", "--size", "32", "--groups", "2"]
    assert main([*wide, "--frame-ms", "1", "--json", str(out), "--overwrite"]) == 0
    assert json.loads(out.read_text())["precision"] is None  # no network, no precision


@pytest.mark.slow
def test_int8_copy_is_recorded_and_stays_within_the_cards_tolerance(tiny_prior_int8, cpu):
    from mlsim_live.evaluation import held_out_set
    from mlsim_live.recon import make_reconstructor

    path, _ = tiny_prior_int8
    card = json.loads(path.with_suffix(".json").read_text())
    recorded = card["precisions"]["int8"]
    assert recorded["file"] == "tiny_prior.int8.onnx" and prec.variant_path(path, "int8").is_file()
    for key in ("psnr_delta_db", "ssim_delta", "speedup_vs_fp32", "parity_tolerance_rel"):
        assert np.isfinite(recorded[key]), key
    assert recorded["calibration"]["groups"] >= 25  # every sample kind at every photon level
    assert recorded["auto_offers"] == (prec.accuracy_verdict(recorded) is None)
    cpu(VNNI)
    kw = {"model": path, "provider": "cpu", "reuse_estimate": True}
    fp32 = make_reconstructor("wiener-rcan", precision="fp32", **kw)
    int8 = make_reconstructor("wiener-rcan", precision="int8", **kw)
    assert int8.precision == "int8" and int8.path.name == "tiny_prior.int8.onnx"
    assert fp32.precision == "fp32" and "int8" in int8.name
    # a group of the held-out kind (random physics) that neither calibration nor check saw
    (_, group), *_ = held_out_set(groups_per_level=1, size=64, photon_levels=(300.0,), seed=99)
    raw = group.raw
    a, b = fp32.reconstruct(raw), int8.reconstruct(raw)
    span = float(a.max() - a.min())
    assert float(np.abs(b - a).max()) / span <= recorded["parity_tolerance_rel"]
    assert not np.array_equal(a, b)  # really another arithmetic


@pytest.mark.slow
def test_cli_precision_refusal_is_one_line(tiny_prior_int8, tmp_path, capsys):
    import tifffile

    from mlsim_live.cli import main
    from mlsim_live.sim import simulate_group

    path, _ = tiny_prior_int8
    tifffile.imwrite(tmp_path / "g.tif", simulate_group(sample="beads", size=32, seed=1).raw)
    args = ["reconstruct", str(tmp_path / "g.tif"), "--model", str(path)]
    assert main([*args, "--out", str(tmp_path / "a"), "--precision", "bf16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bf16" in err[0]
    assert not (tmp_path / "a" / "g_sr.tif").exists()
    if prec.int8_unsupported() is None:
        assert main([*args, "--out", str(tmp_path / "b"), "--precision", "int8"]) == 0
        assert "int8" in (tmp_path / "b" / "g_sr.json").read_text()
    # the command's precision does not outlive it (a Python caller keeps its own default)
    assert prec.default_precision() == prec.AUTO


def test_flops_are_counted_from_the_graph(tmp_path):
    pytest.importorskip("onnx")
    from onnx_models import write_conv_sr

    from mlsim_live.bench.roofline import count_flops, peak_gflops, roofline_fields

    weight = np.zeros((4, 9, 3, 3), dtype=np.float32)
    model = write_conv_sr(tmp_path / "c.onnx", weight)
    counted = count_flops(model, (1, 9, 32, 48))
    assert counted["total"] == 2 * 4 * 32 * 48 * 9 * 3 * 3
    assert counted["per_input_pixel"] == pytest.approx(2 * 4 * 81)
    peak = peak_gflops("fp32", threads=1, n=256)
    assert peak is not None and peak > 0
    fields = roofline_fields(counted["total"], 0.01, peak)
    assert fields["achieved_gflops"] == pytest.approx(counted["total"] / 1e-5 / 1e9, abs=0.01)
    assert roofline_fields(None, 1.0, peak)["fraction_of_peak"] is None
