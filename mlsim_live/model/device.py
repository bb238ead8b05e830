"""Where and in which arithmetic training runs (CUDA or CPU, bf16 or fp32), and the torch RNG
state a checkpoint keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mlsim_live.errors import MLSimError


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AMX or AVX512-BF16 in /proc/cpuinfo)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="ignore")
    except OSError:
        return False
    return any(f in flags for f in ("amx_bf16", "avx512_bf16"))


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether training autocasts to bf16 (see `TrainConfig.precision`)."""
    if precision == "bf16":
        return True
    if precision == "fp32":
        return False
    return device.type == "cuda" or cpu_has_bf16()


def choose_device(name: str | None = None) -> torch.device:
    """``name`` if given, else CUDA when available, else CPU."""
    if name:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise MLSimError(f"unknown device {name!r}; expected cpu, cuda or cuda:N") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise MLSimError(f"device {name!r} requested but CUDA is not available; expected cpu")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
