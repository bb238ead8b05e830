"""Tests of the training loop: checkpoints, logs, plot, resume, fine-tuning, bad checkpoints."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mlsim_live.cli import main  # noqa: E402
from mlsim_live.errors import MLSimError  # noqa: E402
from mlsim_live.model.data import DataConfig, ValidationSet  # noqa: E402
from mlsim_live.model.train import (  # noqa: E402
    evaluate,
    load_checkpoint,
    model_from_checkpoint,
    plot_training,
    psnr,
    ssim_torch,
    train,
)

pytestmark = pytest.mark.torch

SMALL = {
    "batch_size": 2,
    "val_every": 2,
    "checkpoint_every": 1,
    "val_size": 3,
    "workers": 0,
    "warmup_steps": 2,
    "data_reuse": 1,
}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_metrics() -> None:
    a = np.zeros((8, 8), np.float32)
    b = a + 0.1
    assert psnr(b, a) == pytest.approx(20.0)
    assert psnr(a, a) == pytest.approx(100.0)
    x = torch.rand(1, 1, 32, 32)
    assert float(ssim_torch(x, x)) == pytest.approx(1.0, abs=1e-5)
    assert float(ssim_torch(x, torch.rand(1, 1, 32, 32))) < 0.5


class _Constant(torch.nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        return torch.full((n, 1, 2 * h, 2 * w), self.value)


def test_evaluate_separates_empty_fields_and_low_photons() -> None:
    rng = np.random.default_rng(0)
    y = rng.random((3, 1, 16, 16), dtype=np.float32)
    y[2] = 0.0  # an empty field
    val = ValidationSet(
        x=np.zeros((3, 9, 8, 8), np.float32),
        y=y,
        peak_photons=np.array([10.0, 1000.0, 20.0]),
        kinds=("beads", "filaments", "empty"),
    )
    m = evaluate(_Constant(0.25), val, torch.device("cpu"))
    out = np.full((16, 16), 0.25, np.float32)
    assert m["val_psnr"] == pytest.approx((psnr(out, y[0, 0]) + psnr(out, y[1, 0])) / 2)
    assert m["val_psnr_low"] == pytest.approx(psnr(out, y[0, 0]))
    assert m["val_empty_abs"] == pytest.approx(0.25)
    assert evaluate(_Constant(0.0), val, torch.device("cpu"))["val_empty_abs"] == 0.0


@pytest.mark.slow
def test_train_writes_checkpoint_logs_plot_and_resumes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    data = DataConfig(patch_px=16)
    metrics = train(run, preset="tiny", settings={**SMALL, "steps": 3}, data_config=data)
    for name in ("last.pt", "best.pt", "train_log.csv", "val_log.csv", "metrics.json", "run.json"):
        assert (run / name).is_file(), name
    assert np.isfinite(metrics["val_psnr"]) and -1.0 <= metrics["val_ssim"] <= 1.0
    from PIL import Image

    with Image.open(run / "training.png") as img:
        assert img.format == "PNG" and img.size[0] > 100
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["step"] == 3 and ckpt["preset"] == "tiny"
    assert [int(r["step"]) for r in _rows(run / "val_log.csv")] == [0, 2, 3]
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["step"] == 3

    # a second start without --resume refuses to clobber the run
    with pytest.raises(MLSimError, match="--resume"):
        train(run, preset="tiny", settings={**SMALL, "steps": 3}, data_config=data)

    # resume continues the step count, the optimizer state and the logs
    before = {k: v.clone() for k, v in ckpt["model"].items()}
    train(run, resume=True, settings={"steps": 5})
    resumed = load_checkpoint(run / "last.pt")
    assert resumed["step"] == 5
    assert resumed["train"]["batch_size"] == 2  # saved settings are kept
    assert int(resumed["scheduler"]["last_epoch"]) == 5
    assert any(not torch.equal(before[k], resumed["model"][k]) for k in before)
    steps = [int(r["step"]) for r in _rows(run / "val_log.csv")]
    assert steps == [0, 2, 3, 4, 5]
    assert [int(r["step"]) for r in _rows(run / "train_log.csv")][-1] == 5


@pytest.mark.slow
def test_interrupt_saves_checkpoint_and_resume_trims_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlsim_live.model.train as train_mod

    run = tmp_path / "run"
    calls = {"n": 0}
    real_loss = train_mod.training_loss

    def interrupting_loss(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_mod, "training_loss", interrupting_loss)
    settings = {**SMALL, "steps": 6, "checkpoint_every": 5, "val_every": 5}
    with pytest.raises(KeyboardInterrupt):
        train(run, preset="tiny", settings=settings, data_config=DataConfig(patch_px=16))
    assert load_checkpoint(run / "last.pt")["step"] == 3
    monkeypatch.setattr(train_mod, "training_loss", real_loss)
    # a log row beyond the checkpoint (as after a hard kill) is dropped on resume
    with (run / "val_log.csv").open("a") as fh:
        fh.write("99,1,0.5,1,0.5\n")
    train(run, resume=True)
    assert load_checkpoint(run / "last.pt")["step"] == 6
    assert [int(r["step"]) for r in _rows(run / "val_log.csv")] == [0, 5, 6]


@pytest.mark.slow
def test_cli_train_and_fine_tune(tmp_path: Path) -> None:
    run = tmp_path / "base"
    args = ["train", "--preset", "tiny", "--out", str(run), "--steps", "2", "--batch-size", "2"]
    args += ["--val-every", "2", "--val-size", "2", "--workers", "0", "--patch", "16"]
    assert main(args) == 0
    assert load_checkpoint(run / "last.pt")["step"] == 2

    tuned = tmp_path / "tuned"
    ft = ["train", "--init", str(run / "last.pt"), "--out", str(tuned), "--steps", "1"]
    ft += ["--na", "1.2", "--wavelength-nm", "600", "--pixel-size-um", "0.1"]
    ft += ["--batch-size", "2", "--val-size", "2", "--workers", "0", "--patch", "16"]
    ft += ["--photons", "0.5", "5000", "--sample-weight", "beads=2"]
    assert main(ft) == 0
    ckpt = load_checkpoint(tuned / "last.pt")
    assert ckpt["step"] == 1 and ckpt["init"].endswith("last.pt")
    ranges = ckpt["data"]["ranges"]
    assert ranges["na"] == [1.2, 1.2] and ranges["wavelength_nm"] == [600.0, 600.0]
    assert ranges["pixel_size_um"] == [0.1, 0.1]
    assert ranges["peak_photons"] == [0.5, 5000.0]
    assert ranges["modulation"] == [0.4, 1.0]  # the rest stays randomized
    assert ckpt["data"]["sample_weights"]["beads"] == 2.0
    assert ckpt["train"]["lr"] == pytest.approx(1e-4)
    # the fine-tuned weights started from the base weights
    base = load_checkpoint(run / "last.pt")["model"]
    diffs = [float((ckpt["model"][k] - base[k]).abs().max()) for k in base]
    assert max(diffs) < 0.05

    # usage errors exit 2
    assert main(["train", "--out", str(run), "--preset", "tiny", "--steps", "2"]) == 2
    assert main(["train", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert main(["train", "--out", str(tmp_path / "x"), "--preset", "nope"]) == 2
    bad = ["train", "--out", str(tmp_path / "y"), "--preset", "tiny"]
    assert main([*bad, "--photons", "5", "1"]) == 2
    assert main([*bad, "--sample-weight", "comets=1"]) == 2
    assert main([*bad, "--sample-weight", "beads=-1"]) == 2
    assert main(["train", "--out", str(run), "--resume", "--photons", "1", "2"]) == 2


def test_bad_checkpoints(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pt"
    with pytest.raises(MLSimError, match="does not exist"):
        load_checkpoint(missing)
    text = tmp_path / "text.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(MLSimError, match="could not be read"):
        load_checkpoint(text)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(MLSimError, match="not an mlsim-live RCAN checkpoint"):
        load_checkpoint(other)
    code = tmp_path / "code.pt"
    torch.save({"format": "mlsim-live-rcan", "obj": MLSimError("x")}, code)
    with pytest.raises(MLSimError, match="could not be read"):  # weights_only refuses objects
        load_checkpoint(code)
    from mlsim_live.model.rcan import RCANConfig, build_model

    good = build_model("tiny").state_dict()
    wrong = {"format": "mlsim-live-rcan", "config": RCANConfig(1, 1, 16).to_dict()}
    wrong.update({"model": good, "step": 0})
    with pytest.raises(MLSimError, match="do not fit"):
        model_from_checkpoint(wrong)
    assert main(["export", str(text), "--out", str(tmp_path / "m.onnx")]) == 2


def test_plot_handles_empty_and_single_points(tmp_path: Path) -> None:
    from PIL import Image

    plot_training([], [], tmp_path / "a.png")
    plot_training(
        [{"step": 0.0, "loss": 0.5}],
        [{"step": 0.0, "val_psnr": 20, "val_ssim": 0.5}],
        tmp_path / "b.png",
    )
    for name in ("a.png", "b.png"):
        with Image.open(tmp_path / name) as img:
            assert img.format == "PNG"
