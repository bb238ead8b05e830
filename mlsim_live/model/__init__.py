"""The RCAN of ML-SIM in PyTorch: architecture, simulated training, ONNX export, ML-SIM import.

Needs the ``train`` extra (torch, onnx). Nothing outside this package imports torch.
"""

from __future__ import annotations

from mlsim_live.model.rcan import PRESETS, RCAN, RCANConfig, build_model, preset_config

__all__ = ["PRESETS", "RCAN", "RCANConfig", "build_model", "preset_config"]
