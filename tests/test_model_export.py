"""Tests of ONNX export (checker, parity, model card) and of ML-SIM checkpoint import."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from torch import nn  # noqa: E402

from mlsim_live.cli import main  # noqa: E402
from mlsim_live.errors import MLSimError  # noqa: E402
from mlsim_live.model.export import export_checkpoint, export_onnx  # noqa: E402
from mlsim_live.model.mlsim_import import (  # noqa: E402
    convert_mlsim_state_dict,
    load_mlsim_model,
    load_mlsim_state_dict,
)
from mlsim_live.model.rcan import RCAN, RCANConfig, build_model  # noqa: E402
from mlsim_live.model.train import CHECKPOINT_FORMAT, save_checkpoint  # noqa: E402
from mlsim_live.normalization import normalization_for  # noqa: E402
from mlsim_live.sim import SIMParams, simulate_group  # noqa: E402

pytestmark = pytest.mark.torch


def _run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _tiny_checkpoint(path: Path) -> RCAN:
    torch.manual_seed(0)
    model = build_model("tiny")
    save_checkpoint(
        path,
        {
            "format": CHECKPOINT_FORMAT,
            "preset": "tiny",
            "config": model.config.to_dict(),
            "model": model.state_dict(),
            "step": 7,
            "train": {"batch_size": 2, "lr": 1e-3, "ssim_weight": 0.1, "seed": 0},
            "data": {"patch_px": 16, "ranges": {"peak_photons": [10.0, 5000.0]}},
            "val": {"val_psnr": 21.5, "val_ssim": 0.6},
        },
    )
    return model.eval()


@pytest.mark.slow
def test_export_checkpoint_checker_parity_and_card(tmp_path: Path) -> None:
    model = _tiny_checkpoint(tmp_path / "best.pt")
    out = tmp_path / "models" / "tiny.onnx"
    card = export_checkpoint(tmp_path / "best.pt", out)
    onnx.checker.check_model(onnx.load(str(out)))
    proto = onnx.load(str(out))
    assert proto.opset_import[0].version >= 17
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[1].dim_value == 9 and dims[2].dim_param and dims[3].dim_param  # dynamic H, W

    # parity against PyTorch on random and simulated inputs of two sizes
    rng = np.random.default_rng(1)
    inputs = []
    for size in (40, 57):
        inputs.append(rng.random((1, 9, size, size + 3), dtype=np.float32))
        raw = simulate_group(SIMParams(), sample="filaments", size=size, seed=size).raw
        inputs.append(normalization_for(raw).apply(raw)[None])
    with torch.no_grad():
        for x in inputs:
            expected = model(torch.from_numpy(x)).numpy()
            got = _run_onnx(out, x)
            assert got.shape == (1, 1, 2 * x.shape[2], 2 * x.shape[3])
            assert np.max(np.abs(got - expected)) < 1e-4

    written = json.loads(out.with_suffix(".json").read_text())
    assert written == json.loads(json.dumps(card))
    assert written["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert written["scale"] == 2 and written["preset"] == "tiny"
    assert written["architecture"]["n_feats"] == model.config.n_feats
    assert written["normalization"]["module"] == "mlsim_live.normalization"
    assert written["training"]["steps"] == 7
    assert written["training"]["physics_ranges"]["peak_photons"] == [10.0, 5000.0]
    assert written["validation"]["val_psnr"] == 21.5
    assert written["onnx_opset"] >= 17 and written["parity"]["max_abs_diff"] < 1e-4

    # never overwrite without --overwrite; no partial files are left behind
    with pytest.raises(MLSimError, match="exists"):
        export_checkpoint(tmp_path / "best.pt", out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny.json", "tiny.onnx"]


@pytest.mark.slow
def test_export_fp16_keeps_float32_io(tmp_path: Path) -> None:
    model = RCAN(RCANConfig(1, 1, 16, scale=2)).eval()
    card = export_onnx(model, tmp_path / "half.onnx", fp16=True)
    assert card["precision"] == "float16"
    x = np.random.default_rng(0).random((1, 9, 24, 24), dtype=np.float32)
    got = _run_onnx(tmp_path / "half.onnx", x)
    assert got.dtype == np.float32
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert np.max(np.abs(got - expected)) < 5e-2
    assert next(model.parameters()).dtype == torch.float32  # caller's model untouched


def test_export_rejects_bad_output_names(tmp_path: Path) -> None:
    model = build_model("tiny")
    with pytest.raises(MLSimError, match=r"\.onnx"):
        export_onnx(model, tmp_path / "model.bin")
    with pytest.raises(MLSimError, match="opset"):
        export_onnx(model, tmp_path / "m.onnx", opset=13)


# ---------------------------------------------------------------- ML-SIM's layout, rebuilt here
# The module structure of ML-SIM's models.py (RCAN with narch=0): the same nesting of
# nn.Sequential gives the same state-dict keys as the published checkpoints.


class _CALayer(nn.Module):
    def __init__(self, channel: int, reduction: int) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channel, channel // reduction, 1, padding=0, bias=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(channel // reduction, channel, 1, padding=0, bias=True),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(self.avg_pool(x))


def _conv(n_in: int, n_out: int) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, bias=True)


class _RCAB(nn.Module):
    def __init__(self, n: int, reduction: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(n, n), nn.ReLU(True), _conv(n, n), _CALayer(n, reduction))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class _ResidualGroup(nn.Module):
    def __init__(self, n: int, reduction: int, n_resblocks: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = [_RCAB(n, reduction) for _ in range(n_resblocks)]
        self.body = nn.Sequential(*blocks, _conv(n, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class _MLSIMRCAN(nn.Module):
    def __init__(self, groups: int, blocks: int, n: int, scale: int, reduction: int = 16) -> None:
        super().__init__()
        self.head = nn.Sequential(_conv(9, n))
        body: list[nn.Module] = [_ResidualGroup(n, reduction, blocks) for _ in range(groups)]
        self.body = nn.Sequential(*body, _conv(n, n))
        if scale == 1:
            self.tail = nn.Sequential(_conv(n, 1))
        else:
            upsampler = nn.Sequential(_conv(n, 4 * n), nn.PixelShuffle(2))
            self.tail = nn.Sequential(upsampler, _conv(n, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        res = self.body(x) + x
        return self.tail(res)


@pytest.mark.parametrize(("scale", "wrap"), [(1, "module"), (2, "state_dict")])
def test_mlsim_import_maps_original_keys(tmp_path: Path, scale: int, wrap: str) -> None:
    torch.manual_seed(scale)
    reference = _MLSIMRCAN(groups=2, blocks=3, n=32, scale=scale).eval()
    state = reference.state_dict()
    assert "body.1.body.2.body.3.conv_du.2.weight" in state  # ML-SIM's naming
    assert "body.1.body.3.weight" in state and "body.2.weight" in state
    if wrap == "module":  # saved from nn.DataParallel
        payload: dict = {f"module.{k}": v for k, v in state.items()}
    else:
        payload = {"state_dict": state, "epoch": torch.tensor(10)}
    path = tmp_path / "mlsim.pth"
    torch.save(payload, path)

    loaded = load_mlsim_state_dict(path)
    config, mapped = convert_mlsim_state_dict(loaded)
    assert set(mapped) == set(build_model(config).state_dict())
    assert (config.n_resgroups, config.n_resblocks, config.n_feats) == (2, 3, 32)
    assert config.scale == scale and config.reduction == 16
    model = load_mlsim_model(path, preset=None)
    x = torch.randn(1, 9, 24, 20)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5)
    with pytest.raises(MLSimError, match="preset 'paper' expects"):
        load_mlsim_model(path, preset="paper")


@pytest.mark.slow
def test_cli_export_from_mlsim_paper(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = _MLSIMRCAN(groups=3, blocks=10, n=96, scale=1).eval()
    pth = tmp_path / "DIV2K_randomised_3x3_20200317.pth"
    torch.save(reference.state_dict(), pth)
    out = tmp_path / "mlsim_paper.onnx"
    assert main(["export", "--from-mlsim", str(pth), "--preset", "paper", "--out", str(out)]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["preset"] == "paper" and card["scale"] == 1
    assert card["architecture"]["n_resblocks"] == 10
    assert card["source"]["sha256"] == hashlib.sha256(pth.read_bytes()).hexdigest()
    x = np.random.default_rng(0).random((1, 9, 36, 40), dtype=np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    assert np.max(np.abs(_run_onnx(out, x) - expected)) < 1e-4


def test_mlsim_import_rejects_bad_files(tmp_path: Path) -> None:
    with pytest.raises(MLSimError, match="does not exist"):
        load_mlsim_state_dict(tmp_path / "none.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(MLSimError, match="weights_only"):
        load_mlsim_state_dict(junk)
    code = tmp_path / "code.pth"
    torch.save({"state_dict": {"head.0.weight": torch.zeros(1)}, "opt": MLSimError("x")}, code)
    with pytest.raises(MLSimError, match="weights_only"):
        load_mlsim_state_dict(code)
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 9, 3, 3)}, other)
    with pytest.raises(MLSimError, match=r"head\.0\.weight"):
        load_mlsim_model(other, preset=None)
    partial = _MLSIMRCAN(1, 2, 16, scale=1).state_dict()
    del partial["body.0.body.1.body.2.bias"]
    with pytest.raises(MLSimError, match="lacks"):
        convert_mlsim_state_dict(partial)
    assert main(["export", "--from-mlsim", str(junk), "--out", str(tmp_path / "x.onnx")]) == 2
    assert main(["export", "--out", str(tmp_path / "x.onnx")]) == 2
