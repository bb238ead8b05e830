"""Where shipped models live, in a source checkout and in an installed package."""

from __future__ import annotations

import sys
from pathlib import Path

from mlsim_live.errors import MLSimError

DEFAULT_MODEL_NAME = "rcan_default.onnx"


def models_dir() -> Path:
    """The folder of shipped models.

    A source checkout keeps them in ``models/`` beside the package; a wheel installs them under
    ``<prefix>/share/mlsim-live/models``.
    """
    candidates = (
        Path(__file__).resolve().parent.parent / "models",
        Path(sys.prefix) / "share" / "mlsim-live" / "models",
    )
    for folder in candidates:
        if (folder / DEFAULT_MODEL_NAME).is_file():
            return folder
    return candidates[0]


def default_model_path() -> Path:
    """Path of the default RCAN model; raises MLSimError when it is not installed."""
    path = models_dir() / DEFAULT_MODEL_NAME
    if not path.is_file():
        raise MLSimError(
            f"the default model {DEFAULT_MODEL_NAME} was not found in {models_dir()}; "
            "pass --model PATH or reinstall mlsim-live"
        )
    return path


def has_default_model() -> bool:
    """True when the default model is installed."""
    return (models_dir() / DEFAULT_MODEL_NAME).is_file()
