"""Where shipped models live, in a source checkout and in an installed package."""

from __future__ import annotations

import sys
from pathlib import Path

from mlsim_live.errors import MLSimError

DEFAULT_MODEL_NAME = "rcan_default.onnx"
#: The shipped model of each learned method.
MODEL_NAMES = {"rcan": DEFAULT_MODEL_NAME, "wiener-rcan": "wiener_rcan_default.onnx"}


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


def default_model_path(method: str = "rcan") -> Path:
    """Path of the shipped model of a learned method (``rcan`` or ``wiener-rcan``).

    Raises MLSimError when it is not installed.
    """
    name = MODEL_NAMES.get(method)
    if name is None:
        raise MLSimError(
            f"method {method!r} has no shipped model; expected one of {', '.join(MODEL_NAMES)}"
        )
    path = models_dir() / name
    if not path.is_file():
        raise MLSimError(
            f"the default model {name} was not found in {models_dir()}; "
            "pass --model PATH or reinstall mlsim-live"
        )
    return path


def has_model(method: str) -> bool:
    """True when the shipped model of a learned method is installed."""
    name = MODEL_NAMES.get(method)
    return name is not None and (models_dir() / name).is_file()


def has_default_model() -> bool:
    """True when the shipped model of the default learned method is installed."""
    from mlsim_live.constants import DEFAULT_LEARNED_METHOD

    return has_model(DEFAULT_LEARNED_METHOD)
