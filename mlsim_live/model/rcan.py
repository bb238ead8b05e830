"""The RCAN of ML-SIM: residual groups of residual channel-attention blocks with a long skip."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from mlsim_live.errors import MLSimError

GROUP_CHANNELS = 9
UPSAMPLERS = ("mlsim", "shuffle")
#: What a model receives beside the 9 raw frames: ``"none"`` (end-to-end ML-SIM) or
#: ``"wiener"`` (the classical Wiener reconstruction, pixel-unshuffled to 4 channels on the
#: camera grid; the network refines it and adds it back through a skip).
PRIORS = ("none", "wiener")
PRIOR_CHANNELS = {"none": 0, "wiener": 4}


@dataclass(frozen=True)
class RCANConfig:
    """Architecture of an RCAN.

    Attributes
    ----------
    n_resgroups : int
        Residual groups in the body.
    n_resblocks : int
        Residual channel-attention blocks (RCAB) per group.
    n_feats : int
        Feature channels of every convolution in the body.
    scale : int
        Output pixels per input pixel along each axis: 1, or 2 (pixel shuffle at the tail, so
        the body runs at camera resolution).
    reduction : int
        Channel reduction inside the channel attention (16 in RCAN and ML-SIM).
    in_channels : int
        Input channels (the 9 raw frames of a SIM group).
    out_channels : int
        Output channels.
    upsampler : str
        Tail at scale 2: ``"mlsim"`` (ML-SIM's: 3x3 conv to 4 n_feats, pixel shuffle, 3x3 conv to
        the output, at 2x resolution) or ``"shuffle"`` (one 3x3 conv to 4 outputs, pixel shuffle;
        much cheaper). Ignored at scale 1.
    prior : str
        ``"none"`` or ``"wiener"`` (see :data:`PRIORS`); with ``"wiener"`` the last 4 input
        channels are the pixel-unshuffled Wiener image and ``in_channels`` is 9 + 4.
    attention : bool
        Channel attention in every block (RCAN's; True). False gives plain residual blocks
        (EDSR's): on a CPU the per-channel gate is a broadcast multiply that ONNX Runtime runs
        outside its blocked convolution layout (a layout change before and after each block)
        and, in int8, as a slow ``QLinearMul``.
    """

    n_resgroups: int
    n_resblocks: int
    n_feats: int
    scale: int = 2
    reduction: int = 16
    in_channels: int = GROUP_CHANNELS
    out_channels: int = 1
    upsampler: str = "mlsim"
    prior: str = "none"
    attention: bool = True

    def __post_init__(self) -> None:
        if self.prior not in PRIORS:
            raise MLSimError(f"RCAN prior is {self.prior!r}; expected one of {list(PRIORS)}")
        if self.prior != "none" and (self.scale != 2 or self.in_channels != self.raw_channels + 4):
            raise MLSimError(
                f"RCAN with prior {self.prior!r} needs scale 2 and {self.raw_channels + 4} input "
                f"channels; got scale {self.scale}, {self.in_channels} channels"
            )
        for name in ("n_resgroups", "n_resblocks", "n_feats", "reduction", "in_channels"):
            if int(getattr(self, name)) < 1:
                raise MLSimError(f"RCAN {name} is {getattr(self, name)}; expected >= 1")
        if self.scale not in (1, 2):
            raise MLSimError(f"RCAN scale is {self.scale}; expected 1 or 2")
        if self.out_channels < 1:
            raise MLSimError(f"RCAN out_channels is {self.out_channels}; expected >= 1")
        if self.upsampler not in UPSAMPLERS:
            raise MLSimError(
                f"RCAN upsampler is {self.upsampler!r}; expected one of {list(UPSAMPLERS)}"
            )

    @property
    def raw_channels(self) -> int:
        """Input channels that hold raw frames (the rest hold the prior)."""
        return GROUP_CHANNELS if self.prior != "none" else self.in_channels

    @property
    def attention_channels(self) -> int:
        """Channels in the squeeze step of the channel attention (at least 1)."""
        return max(1, self.n_feats // self.reduction)

    def to_dict(self) -> dict[str, int | str | bool]:
        """Return the config as a plain dict (for checkpoints and model cards)."""
        return dict(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RCANConfig:
        """Build a config from :meth:`to_dict` output; unknown keys are an error."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise MLSimError(
                f"unknown RCAN config keys {sorted(unknown)}; expected a subset of {sorted(known)}"
            )
        values: dict[str, Any] = {
            k: (str(v) if k in ("upsampler", "prior") else bool(v) if k == "attention" else int(v))
            for k, v in data.items()
        }
        return cls(**values)


def _prior_fed(n_resgroups: int, n_resblocks: int, n_feats: int, **kw: Any) -> RCANConfig:
    """A prior-fed architecture: the 9 frames and the 4-channel Wiener prior in, 2x out
    through the cheap shuffle tail."""
    return RCANConfig(
        n_resgroups,
        n_resblocks,
        n_feats,
        scale=2,
        upsampler="shuffle",
        in_channels=GROUP_CHANNELS + 4,
        prior="wiener",
        **kw,
    )


#: Named architectures. ``paper`` is ML-SIM's published network (3 x 10 x 96, output on the
#: input grid); ``fast`` is the shipped end-to-end model, sized for one 512 x 512 group in about
#: 0.3 s with ONNX Runtime on 2 CPU cores; ``tiny`` is for tests. The ``prior`` family refines
#: the Wiener reconstruction (see PRIORS): ``prior`` is the large one (2 x 4 x 32),
#: ``prior-fast`` the shipped default, shaped for the live rate on a CPU (16 features, one
#: AVX-512 register of fp32, and no channel attention: 3.9x fewer multiply-adds).
PRESETS: dict[str, RCANConfig] = {
    "paper": RCANConfig(n_resgroups=3, n_resblocks=10, n_feats=96, scale=1),
    "fast": RCANConfig(n_resgroups=2, n_resblocks=2, n_feats=32, scale=2, upsampler="shuffle"),
    "tiny": RCANConfig(
        n_resgroups=1, n_resblocks=1, n_feats=8, scale=2, reduction=4, upsampler="shuffle"
    ),
    "prior": _prior_fed(2, 4, 32),
    "prior-fast": _prior_fed(2, 4, 16, reduction=4, attention=False),
    "prior-tiny": _prior_fed(1, 1, 8, reduction=4),
}


def preset_config(name: str) -> RCANConfig:
    """Return the config of a named preset."""
    try:
        return PRESETS[name]
    except KeyError:
        raise MLSimError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}") from None


def _conv3x3(n_in: int, n_out: int) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, bias=True)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: global average, 1x1 down, ReLU, 1x1 up, sigmoid gate."""

    def __init__(self, n_feats: int, n_squeezed: int) -> None:
        super().__init__()
        self.down = nn.Conv2d(n_feats, n_squeezed, 1, bias=True)
        self.up = nn.Conv2d(n_squeezed, n_feats, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean(dim=(2, 3), keepdim=True)
        y = torch.sigmoid(self.up(torch.relu(self.down(y))))
        return x * y


class RCAB(nn.Module):
    """Residual channel-attention block: conv, ReLU, conv, channel attention, plus input
    (``n_squeezed`` None: no channel attention, a plain residual block)."""

    def __init__(self, n_feats: int, n_squeezed: int | None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(n_feats, n_feats)
        self.conv2 = _conv3x3(n_feats, n_feats)
        self.attention: nn.Module = (
            nn.Identity() if n_squeezed is None else ChannelAttention(n_feats, n_squeezed)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attention(self.conv2(torch.relu(self.conv1(x))))


class ResidualGroup(nn.Module):
    """A chain of RCABs and a closing convolution, with a skip over the whole group."""

    def __init__(self, n_feats: int, n_squeezed: int | None, n_resblocks: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(RCAB(n_feats, n_squeezed) for _ in range(n_resblocks))
        self.conv = _conv3x3(n_feats, n_feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = x
        for block in self.blocks:
            res = block(res)
        return x + self.conv(res)


class RCAN(nn.Module):
    """Residual channel-attention network (Zhang et al. 2018) as used by ML-SIM.

    ``head`` (3x3 conv, in -> n_feats), ``groups`` (residual groups), ``body_conv`` and the long
    skip from the head's output, then the tail: at scale 1 one 3x3 conv to the output; at scale 2
    ML-SIM's upsampler (3x3 conv to 4 n_feats, pixel shuffle 2) and a 3x3 conv to the output.

    Input ``(N, 9, H, W)`` float32 normalized by :mod:`mlsim_live.normalization`, output
    ``(N, 1, scale*H, scale*W)``. With ``prior="wiener"`` the input has 4 more channels, the
    normalized Wiener image pixel-unshuffled to the camera grid, and the output is that image
    (pixel-shuffled back) times a learned gain plus the network's correction.
    """

    def __init__(self, config: RCANConfig) -> None:
        super().__init__()
        self.config = config
        n = config.n_feats
        self.head = _conv3x3(config.in_channels, n)
        self.groups = nn.ModuleList(
            ResidualGroup(
                n, config.attention_channels if config.attention else None, config.n_resblocks
            )
            for _ in range(config.n_resgroups)
        )
        self.body_conv = _conv3x3(n, n)
        if config.scale == 2 and config.upsampler == "mlsim":
            self.upsample = _conv3x3(n, 4 * n)
            self.shuffle = nn.PixelShuffle(2)
            self.tail = _conv3x3(n, config.out_channels)
        elif config.scale == 2:
            self.tail = _conv3x3(n, 4 * config.out_channels)
            self.shuffle = nn.PixelShuffle(2)
        else:
            self.tail = _conv3x3(n, config.out_channels)
        if config.prior != "none":
            self.prior_gain = nn.Parameter(torch.ones(1))
            self.prior_shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.prior != "none":
            prior = self.prior_shuffle(x[:, self.config.raw_channels :])
            return self._forward(x) + self.prior_gain * prior
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        res = x
        for group in self.groups:
            res = group(res)
        res = x + self.body_conv(res)
        if self.config.scale == 1:
            return self.tail(res)
        if self.config.upsampler == "mlsim":
            return self.tail(self.shuffle(self.upsample(res)))
        return self.shuffle(self.tail(res))


def build_model(config: RCANConfig | str) -> RCAN:
    """Build an RCAN from a config or a preset name."""
    if isinstance(config, str):
        config = preset_config(config)
    return RCAN(config)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(int(p.numel()) for p in model.parameters() if p.requires_grad)
