"""Optimization settings of a training run and its learning-rate schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlsim_live.errors import MLSimError


@dataclass(frozen=True)
class TrainConfig:
    """Optimization settings of a run.

    Attributes
    ----------
    steps : int
        Total optimizer steps of the run.
    batch_size : int
        Examples per step.
    lr : float
        Peak learning rate (Adam), reached after ``warmup_steps``, then cosine decay to
        ``lr * final_lr_fraction``.
    warmup_steps : int
        Linear warm-up steps.
    final_lr_fraction : float
        Learning rate at the last step relative to ``lr``.
    ssim_weight : float
        Weight of ``1 - SSIM`` added to the L1 loss.
    val_every : int
        Steps between validations (also writes the plot).
    checkpoint_every : int
        Steps between checkpoints.
    val_size : int
        Examples in the fixed validation set.
    seed : int
        Seed of the weights' initialization and of the data streams.
    workers : int
        DataLoader worker processes (0: simulate in the training process).
    grad_clip : float
        Gradient-norm clip.
    data_reuse : int
        Each simulated example is used about this many times (under random rotations and
        mirrors) before it leaves the pool; 1 simulates every example afresh.
    precision : {"auto", "fp32", "bf16"}
        Arithmetic of the forward pass: bf16 autocast, or fp32. ``auto`` takes bf16 on a CPU
        with AMX or AVX512-BF16 (about 1.4x faster steps measured with AVX512-BF16, about 3x
        with AMX) and on CUDA, fp32 elsewhere. Weights, optimizer and loss stay fp32.
    """

    steps: int = 10000
    batch_size: int = 16
    lr: float = 5e-4
    warmup_steps: int = 200
    final_lr_fraction: float = 0.05
    ssim_weight: float = 0.1
    val_every: int = 500
    checkpoint_every: int = 250
    val_size: int = 48
    seed: int = 0
    workers: int = 1
    grad_clip: float = 1.0
    data_reuse: int = 4
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.precision not in ("auto", "fp32", "bf16"):
            raise MLSimError(f"precision {self.precision!r}; expected auto, fp32 or bf16")
        for name in (
            "steps",
            "batch_size",
            "val_every",
            "checkpoint_every",
            "val_size",
            "data_reuse",
        ):
            if int(getattr(self, name)) < 1:
                raise MLSimError(f"{name} is {getattr(self, name)}; expected >= 1")
        if self.lr <= 0:
            raise MLSimError(f"learning rate {self.lr}; expected > 0")
        if self.workers < 0:
            raise MLSimError(f"workers {self.workers}; expected >= 0")


def _lr_factor(step: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    t = min(1.0, (step - config.warmup_steps) / span)
    f = config.final_lr_fraction
    return f + (1 - f) * 0.5 * (1 + math.cos(math.pi * t))
