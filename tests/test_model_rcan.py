"""Tests of the RCAN architecture and its presets."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from mlsim_live.errors import MLSimError  # noqa: E402
from mlsim_live.model.rcan import (  # noqa: E402
    PRESETS,
    RCAN,
    ChannelAttention,
    RCANConfig,
    build_model,
    count_parameters,
    preset_config,
)

pytestmark = pytest.mark.torch


@pytest.mark.parametrize("upsampler", ["mlsim", "shuffle"])
@pytest.mark.parametrize(("height", "width"), [(32, 32), (33, 47), (17, 8)])
def test_forward_shape_scale2(upsampler: str, height: int, width: int) -> None:
    model = RCAN(RCANConfig(1, 2, 16, scale=2, upsampler=upsampler)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 9, height, width))
    assert out.shape == (2, 1, 2 * height, 2 * width)
    assert out.dtype == torch.float32


@pytest.mark.parametrize(("height", "width"), [(32, 32), (31, 45)])
def test_forward_shape_scale1(height: int, width: int) -> None:
    model = RCAN(RCANConfig(2, 1, 16, scale=1)).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 9, height, width))
    assert out.shape == (1, 1, height, width)


def test_presets() -> None:
    assert set(PRESETS) >= {"paper", "fast", "tiny"}
    paper = preset_config("paper")
    assert (paper.n_resgroups, paper.n_resblocks, paper.n_feats) == (3, 10, 96)
    assert paper.scale == 1 and paper.reduction == 16 and paper.in_channels == 9
    fast = preset_config("fast")
    assert fast.scale == 2 and fast.reduction == 16
    assert count_parameters(build_model("tiny")) < count_parameters(build_model("fast"))


def test_paper_parameter_count_matches_mlsim_layout() -> None:
    # ML-SIM's RCAN: head conv, 3 groups of (10 RCAB + conv), body conv, tail conv;
    # each RCAB has two 3x3 convs and a channel attention 96 -> 6 -> 96.
    n, c = 96, 9
    conv3 = n * n * 9 + n
    rcab = 2 * conv3 + (n * (n // 16) + n // 16) + ((n // 16) * n + n)
    expected = (c * n * 9 + n) + 3 * (10 * rcab + conv3) + conv3 + (n * 1 * 9 + 1)
    assert count_parameters(build_model("paper")) == expected


def test_channel_attention_reduction() -> None:
    model = RCAN(RCANConfig(1, 1, 64, reduction=16))
    attention = model.groups[0].blocks[0].attention
    assert attention.down.out_channels == 4
    assert attention.up.out_channels == 64
    tiny = RCAN(RCANConfig(1, 1, 8, reduction=16))  # at least one squeezed channel
    assert tiny.groups[0].blocks[0].attention.down.out_channels == 1


def test_long_skip_connection() -> None:
    # With the body's last conv zeroed, the body contributes nothing: the long skip passes the
    # head's features straight to the tail.
    model = RCAN(RCANConfig(2, 2, 16, scale=1)).eval()
    with torch.no_grad():
        model.body_conv.weight.zero_()
        model.body_conv.bias.zero_()
        x = torch.randn(1, 9, 20, 20)
        assert torch.allclose(model(x), model.tail(model.head(x)), atol=1e-6)


def test_config_roundtrip_and_errors() -> None:
    cfg = RCANConfig(2, 3, 24, scale=2, upsampler="shuffle")
    assert RCANConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(MLSimError, match="scale"):
        RCANConfig(1, 1, 8, scale=3)
    with pytest.raises(MLSimError, match="upsampler"):
        RCANConfig(1, 1, 8, upsampler="bicubic")
    with pytest.raises(MLSimError, match="n_feats"):
        RCANConfig(1, 1, 0)
    with pytest.raises(MLSimError, match="unknown preset"):
        preset_config("huge")
    with pytest.raises(MLSimError, match="unknown RCAN config keys"):
        RCANConfig.from_dict({**cfg.to_dict(), "depth": 3})


def _conv_macs_per_camera_pixel(model: RCAN) -> int:
    # every convolution of a "shuffle" model runs on the camera grid: its weights are its
    # multiply-adds per camera pixel
    return sum(int(m.weight.numel()) for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def test_prior_fast_is_the_prior_model_shaped_for_the_live_rate() -> None:
    fast, prior = preset_config("prior-fast"), preset_config("prior")
    assert fast.prior == prior.prior == "wiener" and fast.in_channels == prior.in_channels == 13
    assert fast.upsampler == prior.upsampler == "shuffle"
    ratio = _conv_macs_per_camera_pixel(build_model(prior)) / _conv_macs_per_camera_pixel(
        build_model(fast)
    )
    assert 3.5 < ratio < 5.0  # about 4x fewer multiply-adds per group
    assert not fast.attention and prior.attention
    out = build_model(fast).eval()(torch.randn(1, 13, 12, 10))
    assert out.shape == (1, 1, 24, 20)


def test_blocks_without_channel_attention() -> None:
    cfg = RCANConfig(1, 2, 8, scale=2, upsampler="shuffle", attention=False)
    model = RCAN(cfg)
    assert not any(isinstance(m, ChannelAttention) for m in model.modules())
    with_attention = RCAN(RCANConfig(1, 2, 8, scale=2, upsampler="shuffle"))
    assert count_parameters(model) < count_parameters(with_attention)
    assert RCANConfig.from_dict(cfg.to_dict()) == cfg
    # cards written before the option existed hold no "attention": channel attention, as then
    old = {k: v for k, v in with_attention.config.to_dict().items() if k != "attention"}
    assert RCANConfig.from_dict(old).attention is True
    block = model.groups[0].blocks[0]
    x = torch.randn(1, 8, 6, 6)
    assert torch.allclose(block(x), x + block.conv2(torch.relu(block.conv1(x))))
