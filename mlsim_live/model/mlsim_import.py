"""Import of ML-SIM's published RCAN checkpoints (``models.py`` key layout) into our RCAN.

ML-SIM (Christensen et al. 2021) saves ``RCAN.state_dict()`` (sometimes wrapped in
``{"state_dict": ...}`` and with DataParallel's ``module.`` prefix). Its layout is::

    head.0                                   3x3 conv, 9 -> n_feats
    body.G.body.B.body.0 / .body.2           the two 3x3 convs of RCAB B in group G
    body.G.body.B.body.3.conv_du.0 / .2      channel attention 1x1 convs (down, up)
    body.G.body.{n_resblocks}                closing conv of group G
    body.{n_resgroups}                       closing conv of the body
    tail.0                                   scale 1: 3x3 conv to the output
    tail.0.0, tail.1                         scale 2: upsampler conv (-> 4 n_feats), output conv

The file is read with ``torch.load(weights_only=True)``: a checkpoint from the internet never
runs code.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from mlsim_live.errors import MLSimError
from mlsim_live.model.rcan import RCAN, RCANConfig, build_model, preset_config

log = logging.getLogger(__name__)

_RCAB = re.compile(
    r"^body\.(\d+)\.body\.(\d+)\.body\.(0|2|3\.conv_du\.0|3\.conv_du\.2)\.(weight|bias)$"
)
_GROUP_CONV = re.compile(r"^body\.(\d+)\.body\.(\d+)\.(weight|bias)$")
_BODY_CONV = re.compile(r"^body\.(\d+)\.(weight|bias)$")
_RCAB_PARTS = {
    "0": "conv1",
    "2": "conv2",
    "3.conv_du.0": "attention.down",
    "3.conv_du.2": "attention.up",
}


def load_mlsim_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read an ML-SIM checkpoint safely and return its plain RCAN state dict.

    Raises
    ------
    MLSimError
        Missing file, not a PyTorch file, a file that needs code to load, or no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise MLSimError(f"ML-SIM checkpoint {path} does not exist; expected a .pth file")
    try:
        data: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise MLSimError(
            f"ML-SIM checkpoint {path} could not be read with weights_only=True "
            f"({type(exc).__name__}); expected a PyTorch state dict of tensors"
        ) from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not data:
        raise MLSimError(f"ML-SIM checkpoint {path} holds no state dict; expected RCAN weights")
    state: dict[str, torch.Tensor] = {}
    for key, value in data.items():
        if not isinstance(value, torch.Tensor):
            raise MLSimError(
                f"ML-SIM checkpoint {path} entry {key!r} is a {type(value).__name__}; "
                "expected tensors only"
            )
        state[key[7:] if key.startswith("module.") else key] = value
    return state


def infer_mlsim_config(state: dict[str, torch.Tensor]) -> RCANConfig:
    """Read the RCAN architecture off an ML-SIM state dict's keys and shapes."""
    if "head.0.weight" not in state:
        hint = " (ML-SIM narch=1 models are not supported)" if "head0.weight" in state else ""
        raise MLSimError(
            f"state dict has no 'head.0.weight'{hint}; expected ML-SIM's RCAN (narch=0) layout"
        )
    head = state["head.0.weight"]
    n_feats, in_channels = int(head.shape[0]), int(head.shape[1])
    groups: set[int] = set()
    blocks: set[int] = set()
    for key in state:
        m = _RCAB.match(key)
        if m:
            groups.add(int(m.group(1)))
            blocks.add(int(m.group(2)))
    if not groups:
        raise MLSimError("state dict has no residual channel-attention blocks; expected RCAN")
    n_resgroups, n_resblocks = max(groups) + 1, max(blocks) + 1
    squeeze = state.get("body.0.body.0.body.3.conv_du.0.weight")
    if squeeze is None:
        raise MLSimError("state dict has no channel attention (conv_du); expected RCAN's CALayer")
    reduction = max(1, n_feats // int(squeeze.shape[0]))
    if "tail.0.0.weight" in state and "tail.1.weight" in state:
        if any(k.startswith("tail.0.2.") for k in state):
            raise MLSimError("ML-SIM model upsamples by 4; expected scale 1 or 2")
        scale, out_channels = 2, int(state["tail.1.weight"].shape[0])
    elif "tail.0.weight" in state:
        tail = state["tail.0.weight"]
        if tail.shape[-1] != 3:
            raise MLSimError("ML-SIM tail is a 1x1 segmentation head; expected a 3x3 output conv")
        scale, out_channels = 1, int(tail.shape[0])
    else:
        raise MLSimError("state dict has no tail ('tail.0'); expected ML-SIM's RCAN layout")
    return RCANConfig(
        n_resgroups=n_resgroups,
        n_resblocks=n_resblocks,
        n_feats=n_feats,
        scale=scale,
        reduction=reduction,
        in_channels=in_channels,
        out_channels=out_channels,
        upsampler="mlsim",
    )


def map_mlsim_key(key: str, config: RCANConfig) -> str:
    """Our parameter name for one ML-SIM state-dict key (MLSimError if it has none)."""
    if key.startswith("head.0."):
        return "head." + key[len("head.0.") :]
    m = _RCAB.match(key)
    if m:
        g, b, part, kind = m.groups()
        if int(b) < config.n_resblocks:
            return f"groups.{g}.blocks.{b}.{_RCAB_PARTS[part]}.{kind}"
    m = _GROUP_CONV.match(key)
    if m and int(m.group(2)) == config.n_resblocks:
        return f"groups.{m.group(1)}.conv.{m.group(3)}"
    m = _BODY_CONV.match(key)
    if m and int(m.group(1)) == config.n_resgroups:
        return f"body_conv.{m.group(2)}"
    if config.scale == 1 and key.startswith("tail.0."):
        return "tail." + key[len("tail.0.") :]
    if config.scale == 2 and key.startswith("tail.0.0."):
        return "upsample." + key[len("tail.0.0.") :]
    if config.scale == 2 and key.startswith("tail.1."):
        return "tail." + key[len("tail.1.") :]
    raise MLSimError(f"ML-SIM key {key!r} has no counterpart; expected ML-SIM's RCAN layout")


def convert_mlsim_state_dict(
    state: dict[str, torch.Tensor], preset: str | None = None
) -> tuple[RCANConfig, dict[str, torch.Tensor]]:
    """Map an ML-SIM RCAN state dict onto our names.

    Parameters
    ----------
    state : dict
        ML-SIM's state dict (``module.`` prefixes already removed).
    preset : str, optional
        When given, the checkpoint's architecture must be this preset's.

    Returns
    -------
    config, state dict for :class:`~mlsim_live.model.rcan.RCAN`
    """
    config = infer_mlsim_config(state)
    if preset is not None:
        expected = preset_config(preset)
        if expected.scale == 1:  # the upsampler choice does not exist at scale 1
            expected = replace(expected, upsampler="mlsim")
        if expected != config:
            raise MLSimError(
                f"ML-SIM checkpoint is {_describe(config)}; preset {preset!r} expects "
                f"{_describe(expected)}"
            )
    mapped = {map_mlsim_key(k, config): v for k, v in state.items()}
    reference = build_model(config).state_dict()
    missing = sorted(set(reference) - set(mapped))
    if missing:
        raise MLSimError(
            f"ML-SIM checkpoint lacks {len(missing)} weights (first {missing[0]!r}); "
            "expected a complete RCAN"
        )
    for name, tensor in mapped.items():
        if tuple(tensor.shape) != tuple(reference[name].shape):
            raise MLSimError(
                f"ML-SIM weight for {name} has shape {tuple(tensor.shape)}; "
                f"expected {tuple(reference[name].shape)}"
            )
    return config, {k: v.float() for k, v in mapped.items()}


def _describe(c: RCANConfig) -> str:
    return (
        f"{c.n_resgroups} groups x {c.n_resblocks} blocks x {c.n_feats} features, "
        f"scale {c.scale}, reduction {c.reduction}, {c.in_channels} -> {c.out_channels} channels"
    )


def load_mlsim_model(path: str | os.PathLike[str], preset: str | None = "paper") -> RCAN:
    """Load ML-SIM's published checkpoint (e.g. ``DIV2K_randomised_3x3_20200317.pth``)."""
    config, state = convert_mlsim_state_dict(load_mlsim_state_dict(path), preset)
    model = build_model(config)
    model.load_state_dict(state)
    log.info("imported ML-SIM RCAN from %s: %s", path, _describe(config))
    return model.eval()
