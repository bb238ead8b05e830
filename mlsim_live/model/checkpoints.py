"""Training checkpoints: atomic writes, loading with ``weights_only`` and the model they hold."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mlsim_live.errors import MLSimError
from mlsim_live.io.atomic import write_bytes_atomic
from mlsim_live.model.rcan import RCAN, RCANConfig, build_model

CHECKPOINT_FORMAT = "mlsim-live-rcan"
CHECKPOINT_VERSION = 1


def _atomic_write_bytes(path: Path, write: Callable[[Any], None]) -> None:
    """Write ``path`` (its folder created) atomically through `mlsim_live.io.atomic`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, write, overwrite=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to ``path`` through a temporary file in the same folder."""
    _atomic_write_bytes(path, lambda fh: fh.write(text.encode("utf-8")))


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Save a checkpoint atomically (never a partial file)."""
    _atomic_write_bytes(path, lambda fh: torch.save(payload, fh))


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load one of our checkpoints with ``weights_only=True`` and check its format.

    Raises
    ------
    MLSimError
        Missing file, not a PyTorch file, not loadable without running code, or not a
        mlsim-live RCAN checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise MLSimError(f"checkpoint {path} does not exist; expected a .pt file from train")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise MLSimError(
            f"checkpoint {path} could not be read ({type(exc).__name__}); "
            "expected a PyTorch checkpoint written by mlsim-live train"
        ) from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise MLSimError(
            f"checkpoint {path} is not an mlsim-live RCAN checkpoint; "
            "expected one written by mlsim-live train (use export --from-mlsim for ML-SIM's)"
        )
    for key in ("config", "model", "step"):
        if key not in data:
            raise MLSimError(f"checkpoint {path} has no {key!r} entry; expected a complete one")
    return data


def model_from_checkpoint(data: dict[str, Any], source: str = "checkpoint") -> RCAN:
    """Build the RCAN of a loaded checkpoint and load its weights."""
    config = RCANConfig.from_dict(dict(data["config"]))
    model = build_model(config)
    try:
        model.load_state_dict(data["model"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise MLSimError(
            f"{source} weights do not fit its RCAN config ({first}); expected matching weights"
        ) from None
    return model
