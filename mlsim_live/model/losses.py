"""The training loss (L1 plus 1 - SSIM) and the validation metrics of an RCAN (torch)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mlsim_live.model.data import ValidationSet
from mlsim_live.model.rcan import RCAN

LOW_PHOTONS = 50.0  # validation examples at or below this peak count as "low signal"


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_torch(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM (Gaussian window 11, sigma 1.5) of two ``(N, 1, H, W)`` batches."""
    window = _gaussian_window().to(a)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a = F.conv2d(a, window)
    mu_b = F.conv2d(b, window)
    var_a = F.conv2d(a * a, window) - mu_a**2
    var_b = F.conv2d(b * b, window) - mu_b**2
    cov = F.conv2d(a * b, window) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return (num / den).mean()


def training_loss(output: torch.Tensor, target: torch.Tensor, ssim_weight: float) -> torch.Tensor:
    """L1, plus ``ssim_weight * (1 - SSIM)`` when the weight is positive."""
    loss = F.l1_loss(output, target)
    if ssim_weight > 0:
        loss = loss + ssim_weight * (1.0 - ssim_torch(output, target))
    return loss


def psnr(output: np.ndarray, target: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB (capped at 100 dB for identical images)."""
    mse = float(np.mean((np.asarray(output, np.float64) - np.asarray(target, np.float64)) ** 2))
    return float(10.0 * np.log10(data_range**2 / max(mse, 1e-10)))


def evaluate(model: RCAN, val: ValidationSet, device: torch.device) -> dict[str, float]:
    """Validation metrics of ``model`` (output clipped to [0, 1.5]).

    ``val_psnr``/``val_ssim``: means over the examples with structure; ``val_psnr_low``/
    ``val_ssim_low``: the same at or below :data:`LOW_PHOTONS` peak photons;
    ``val_empty_abs``: mean absolute output on empty fields (target zero), the invented signal.
    """
    from skimage.metrics import structural_similarity

    model.eval()
    raw_outputs = []
    with torch.no_grad():
        for i in range(0, len(val.x), 8):
            out = model(torch.from_numpy(val.x[i : i + 8]).to(device)).cpu().numpy()
            raw_outputs.extend(out[:, 0])
    model.train()
    targets = list(val.y[:, 0])
    config = getattr(model, "config", None)
    if getattr(config, "prior", "none") != "none":
        # prior-fed targets are in the frames' units: score on the end-to-end models' footing
        # (each target divided by its own 99.9th percentile)
        highs = [float(np.percentile(t, 99.9)) for t in targets]
        targets = [t / h if h > 0 else t for t, h in zip(targets, highs)]
        raw_outputs = [o / h if h > 0 else o for o, h in zip(raw_outputs, highs)]
    outputs = [np.clip(o, 0.0, 1.5) for o in raw_outputs]
    empty = np.array([not np.any(t) for t in targets])
    psnrs = np.array([psnr(o, t) for o, t in zip(outputs, targets)])
    ssims = np.array(
        [float(structural_similarity(t, o, data_range=1.0)) for o, t in zip(outputs, targets)]
    )
    full = ~empty if (~empty).any() else np.ones_like(empty)
    metrics = {"val_psnr": float(psnrs[full].mean()), "val_ssim": float(ssims[full].mean())}
    low = full & (val.peak_photons <= LOW_PHOTONS)
    if low.any():
        metrics["val_psnr_low"] = float(psnrs[low].mean())
        metrics["val_ssim_low"] = float(ssims[low].mean())
    if empty.any():
        metrics["val_empty_abs"] = float(
            np.mean([np.abs(outputs[i]).mean() for i in np.where(empty)[0]])
        )
    return metrics
