"""Training loop of the RCAN on simulated data: checkpoints, resume, validation, plots."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mlsim_live.errors import MLSimError
from mlsim_live.model.data import (
    DataConfig,
    SimulatedDataset,
    ValidationSet,
    validation_set,
)
from mlsim_live.model.rcan import RCAN, RCANConfig, build_model, count_parameters, preset_config

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "mlsim-live-rcan"
CHECKPOINT_VERSION = 1
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
TRAIN_LOG = "train_log.csv"
VAL_LOG = "val_log.csv"
METRICS_JSON = "metrics.json"
PLOT_PNG = "training.png"
RUN_JSON = "run.json"
LOW_PHOTONS = 50.0  # validation examples at or below this peak count as "low signal"


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


@dataclass
class RunState:
    """What a run has done so far (kept in every checkpoint)."""

    step: int = 0
    train_seconds: float = 0.0
    best_val_psnr: float = -math.inf
    last_val: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------- losses, metrics


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


# ----------------------------------------------------------------------------- checkpoints


def _atomic_write_bytes(path: Path, write: Callable[[Any], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


# ----------------------------------------------------------------------------- logs and plots


def _read_csv(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]


def _write_csv(path: Path, rows: list[dict[str, float]]) -> None:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    lines = [",".join(keys)]
    for row in rows:
        lines.append(",".join(_fmt(row.get(k)) for k in keys))
    atomic_write_text(path, "\n".join(lines) + "\n")


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def plot_training(
    train_rows: list[dict[str, float]], val_rows: list[dict[str, float]], path: Path
) -> None:
    """Draw loss (log scale) and validation PSNR/SSIM against step into a PNG (PIL only)."""
    from PIL import Image, ImageDraw

    width, height, pad = 900, 640, 60
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    panels = [
        (pad, 30, width - 30, height // 2 - 30),
        (pad, height // 2 + 30, width - 60, height - 40),
    ]
    steps_max = max([1.0] + [r["step"] for r in train_rows + val_rows])

    def axes(box: tuple[int, int, int, int], title: str) -> None:
        x0, y0, x1, y1 = box
        draw.rectangle(box, outline="black")
        draw.text((x0, y0 - 16), title, fill="black")
        draw.text((x1 - 60, y1 + 4), f"step {int(steps_max)}", fill="black")
        draw.text((x0, y1 + 4), "0", fill="black")

    def line(
        box: tuple[int, int, int, int],
        xs: list[float],
        ys: list[float],
        color: str,
        lo: float,
        hi: float,
    ) -> None:
        x0, y0, x1, y1 = box
        if hi <= lo:
            hi = lo + 1.0
        pts = [
            (x0 + (x1 - x0) * x / steps_max, y1 - (y1 - y0) * (y - lo) / (hi - lo))
            for x, y in zip(xs, ys)
            if math.isfinite(y)
        ]
        if len(pts) > 1:
            draw.line(pts, fill=color, width=2)
        elif pts:
            px, py = pts[0]
            draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=color)

    # loss panel
    box = panels[0]
    axes(box, "training loss (log scale)")
    losses = [(r["step"], r["loss"]) for r in train_rows if r.get("loss", 0) > 0]
    if losses:
        logs = [math.log10(v) for _, v in losses]
        lo, hi = min(logs), max(logs)
        line(box, [s for s, _ in losses], logs, "#1f77b4", lo, hi)
        draw.text((box[0] - 55, box[1]), f"{10**hi:.3g}", fill="black")
        draw.text((box[0] - 55, box[3] - 12), f"{10**lo:.3g}", fill="black")
    # validation panel: PSNR (left axis) and SSIM (right axis)
    box = panels[1]
    axes(box, "validation: PSNR dB (blue, left), SSIM (red, right)")
    if val_rows:
        steps = [r["step"] for r in val_rows]
        p = [r["val_psnr"] for r in val_rows]
        s = [r["val_ssim"] for r in val_rows]
        plo, phi = min(p) - 0.5, max(p) + 0.5
        slo, shi = min(s) - 0.02, max(s) + 0.02
        line(box, steps, p, "#1f77b4", plo, phi)
        line(box, steps, s, "#d62728", slo, shi)
        draw.text((box[0] - 55, box[1]), f"{phi:.1f}", fill="#1f77b4")
        draw.text((box[0] - 55, box[3] - 12), f"{plo:.1f}", fill="#1f77b4")
        draw.text((box[2] + 4, box[1]), f"{shi:.3f}", fill="#d62728")
        draw.text((box[2] + 4, box[3] - 12), f"{slo:.3f}", fill="#d62728")
    _atomic_write_bytes(path, lambda fh: img.save(fh, format="PNG"))


# ----------------------------------------------------------------------------- training


def _lr_factor(step: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    t = min(1.0, (step - config.warmup_steps) / span)
    f = config.final_lr_fraction
    return f + (1 - f) * 0.5 * (1 + math.cos(math.pi * t))


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


class Trainer:
    """One training run in a run folder.

    Parameters
    ----------
    run_dir : path
        Folder for checkpoints, logs and plots.
    model_config : RCANConfig
        Architecture.
    preset : str
        Name recorded with the run (``"custom"`` when not a preset).
    train_config : TrainConfig
    data_config : DataConfig
    device : torch.device
    init : dict, optional
        A loaded checkpoint whose weights start this run (fine-tuning).
    """

    def __init__(
        self,
        run_dir: Path,
        model_config: RCANConfig,
        preset: str,
        train_config: TrainConfig,
        data_config: DataConfig,
        device: torch.device,
        init: dict[str, Any] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.model_config = model_config
        self.preset = preset
        self.config = train_config
        self.data_config = data_config
        self.device = device
        torch.manual_seed(train_config.seed)
        self.model = build_model(model_config)
        self.init_source: str | None = None
        if init is not None:
            src = model_from_checkpoint(init, "init checkpoint")
            if src.config != model_config:
                raise MLSimError(
                    f"init checkpoint has architecture {src.config}; expected {model_config}"
                )
            self.model.load_state_dict(src.state_dict())
            self.init_source = str(init.get("source_path", "checkpoint"))
        self.model.to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=train_config.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: _lr_factor(s, self.config)
        )
        self.state = RunState()
        self._val: ValidationSet | None = None
        self.bf16 = use_bf16(train_config.precision, device)
        log.info("training arithmetic: %s", "bf16 autocast" if self.bf16 else "fp32")

    # -- persistence

    def checkpoint_payload(self) -> dict[str, Any]:
        """Everything needed to resume the run, or export its model (weights-only safe)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "preset": self.preset,
            "config": self.model_config.to_dict(),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.state.step,
            "train_seconds": self.state.train_seconds,
            "best_val_psnr": self.state.best_val_psnr,
            "val": dict(self.state.last_val),
            "train": asdict(self.config),
            "data": self.data_config.to_dict(),
            "init": self.init_source,
            "normalization": "mlsim_live.normalization",
            "rng": _rng_state(),
        }

    def save(self, name: str = LAST_CHECKPOINT) -> Path:
        """Write a checkpoint into the run folder atomically."""
        path = self.run_dir / name
        save_checkpoint(path, self.checkpoint_payload())
        return path

    def restore(self, data: dict[str, Any]) -> None:
        """Continue from a loaded checkpoint of this run."""
        saved = RCANConfig.from_dict(dict(data["config"]))
        if saved != self.model_config:
            raise MLSimError(
                f"checkpoint architecture {saved} differs from the requested {self.model_config}"
            )
        self.model.load_state_dict(data["model"])
        self.optimizer.load_state_dict(data["optimizer"])
        self.scheduler.load_state_dict(data["scheduler"])
        self.state.step = int(data["step"])
        self.state.train_seconds = float(data.get("train_seconds", 0.0))
        self.state.best_val_psnr = float(data.get("best_val_psnr", -math.inf))
        self.state.last_val = {k: float(v) for k, v in dict(data.get("val", {})).items()}
        self.init_source = data.get("init")
        _set_rng_state(dict(data.get("rng", {})))
        # logs may be ahead of the checkpoint after a hard kill: drop what will be redone
        for name in (TRAIN_LOG, VAL_LOG):
            rows = _read_csv(self.run_dir / name)
            kept = [r for r in rows if r.get("step", 0) <= self.state.step]
            if len(kept) != len(rows):
                _write_csv(self.run_dir / name, kept)

    def validation(self) -> ValidationSet:
        """The run's fixed validation set (built once, cached in the run folder)."""
        if self._val is None:
            cache = self.run_dir / "validation_set.npz"
            if cache.is_file():
                with np.load(cache, allow_pickle=False) as z:
                    self._val = ValidationSet(
                        z["x"], z["y"], z["peak_photons"], tuple(str(k) for k in z["kinds"])
                    )
                if len(self._val.x) != self.config.val_size:
                    self._val = None
            if self._val is None:
                log.info("building the validation set (%d examples)", self.config.val_size)
                self._val = validation_set(self.data_config, self.config.val_size)

                def write(fh: Any) -> None:
                    np.savez(
                        fh,
                        x=self._val.x,
                        y=self._val.y,
                        peak_photons=self._val.peak_photons,
                        kinds=np.array(self._val.kinds),
                    )

                _atomic_write_bytes(cache, write)
        return self._val

    def write_run_json(self) -> None:
        """Describe the run (architecture, settings, physics) in ``run.json``."""
        info = {
            "preset": self.preset,
            "architecture": {"type": "RCAN", **self.model_config.to_dict()},
            "parameters": count_parameters(self.model),
            "train": asdict(self.config),
            "data": self.data_config.to_dict(),
            "device": str(self.device),
            "init": self.init_source,
            "torch_threads": torch.get_num_threads(),
            "arithmetic": "bf16 autocast" if self.bf16 else "fp32",
        }
        atomic_write_text(self.run_dir / RUN_JSON, json.dumps(info, indent=2) + "\n")

    # -- the loop

    def validate_and_log(self) -> dict[str, float]:
        """Run validation, append to the log, write the plot and metrics, keep the best."""
        metrics = evaluate(self.model, self.validation(), self.device)
        self.state.last_val = metrics
        rows = _read_csv(self.run_dir / VAL_LOG)
        rows = [r for r in rows if r.get("step") != self.state.step]
        rows.append({"step": float(self.state.step), **metrics})
        _write_csv(self.run_dir / VAL_LOG, rows)
        if metrics["val_psnr"] > self.state.best_val_psnr:
            self.state.best_val_psnr = metrics["val_psnr"]
            self.save(BEST_CHECKPOINT)
        summary = {
            "step": self.state.step,
            "train_seconds": round(self.state.train_seconds, 1),
            "best_val_psnr": self.state.best_val_psnr,
            **metrics,
        }
        atomic_write_text(self.run_dir / METRICS_JSON, json.dumps(summary, indent=2) + "\n")
        plot_training(_read_csv(self.run_dir / TRAIN_LOG), rows, self.run_dir / PLOT_PNG)
        log.info(
            "step %d: val PSNR %.2f dB, SSIM %.4f", self.state.step, *list(metrics.values())[:2]
        )
        return metrics

    def run(self, progress: bool = False, log_every: int = 10) -> dict[str, float]:
        """Train until ``config.steps``; return the last validation metrics.

        Saves a checkpoint every ``checkpoint_every`` steps and when interrupted
        (KeyboardInterrupt is re-raised after the save).
        """
        from torch.utils.data import DataLoader
        from tqdm import tqdm

        cfg = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.write_run_json()
        self.validation()
        if self.state.step == 0:
            self.validate_and_log()
        dataset = SimulatedDataset(
            self.data_config, seed=cfg.seed, stream=self.state.step, reuse=cfg.data_reuse
        )
        loader = DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            num_workers=cfg.workers,
            persistent_workers=False,
            prefetch_factor=4 if cfg.workers > 0 else None,
        )
        bar = tqdm(
            total=cfg.steps,
            initial=self.state.step,
            disable=not progress,
            dynamic_ncols=True,
            mininterval=0.5 if sys.stderr.isatty() else 30.0,
            desc="train",
        )
        window: list[float] = []
        pending: list[dict[str, float]] = []
        shown_loss = float("nan")
        self.model.train()
        last_saved = self.state.step
        t_last = time.perf_counter()
        try:
            for x, y in loader:
                if self.state.step >= cfg.steps:
                    break
                x = x.to(self.device, non_blocking=True)
                y = y.to(self.device, non_blocking=True)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                    out = self.model(x)
                loss = training_loss(out.float(), y, cfg.ssim_weight)
                if not torch.isfinite(loss):
                    raise MLSimError(
                        f"training loss became {loss.item()} at step {self.state.step}; "
                        "expected a finite loss (lower --lr)"
                    )
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                self.state.step += 1
                now = time.perf_counter()
                self.state.train_seconds += now - t_last
                t_last = now
                window.append(float(loss.item()))
                bar.update(1)
                if self.state.step % log_every == 0 or self.state.step == cfg.steps:
                    mean_loss = float(np.mean(window))
                    pending.append(
                        {
                            "step": float(self.state.step),
                            "loss": mean_loss,
                            "lr": float(self.scheduler.get_last_lr()[0]),
                            "seconds": round(self.state.train_seconds, 2),
                        }
                    )
                    shown_loss = mean_loss
                    bar.set_postfix(loss=f"{mean_loss:.4f}")
                    window = []
                val_due = self.state.step % cfg.val_every == 0 or self.state.step == cfg.steps
                ckpt_due = self.state.step % cfg.checkpoint_every == 0 or val_due
                if ckpt_due:
                    self._flush_train_log(pending)
                    pending = []
                if val_due:
                    self.validate_and_log()
                    bar.set_postfix(
                        loss=f"{shown_loss:.4f}", psnr=f"{self.state.last_val['val_psnr']:.2f}"
                    )
                if ckpt_due:
                    self.save()
                    last_saved = self.state.step
                    t_last = time.perf_counter()
        except KeyboardInterrupt:
            if self.state.step != last_saved:
                self._flush_train_log(pending)
                self.save()
                log.warning("interrupted at step %d; checkpoint saved", self.state.step)
            raise
        finally:
            bar.close()
        return dict(self.state.last_val)

    def _flush_train_log(self, rows: list[dict[str, float]]) -> None:
        if not rows:
            return
        path = self.run_dir / TRAIN_LOG
        existing = _read_csv(path)
        _write_csv(path, existing + rows)


def train(
    run_dir: str | os.PathLike[str],
    *,
    preset: str | None = None,
    settings: dict[str, Any] | None = None,
    data_config: DataConfig | None = None,
    resume: bool = False,
    overwrite: bool = False,
    init: str | os.PathLike[str] | None = None,
    device: str | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Train an RCAN on simulated data in ``run_dir``; return the last validation metrics.

    Parameters
    ----------
    run_dir : path
        Run folder. ``last.pt`` there is continued with ``resume=True``; without it an existing
        run is an error unless ``overwrite``.
    preset : str, optional
        Architecture preset (default ``"fast"``); with ``init`` or ``resume`` the checkpoint's
        architecture is used and a different preset is an error.
    settings : dict, optional
        :class:`TrainConfig` fields to set. A resumed run keeps its saved settings except these
        (typically ``steps``).
    data_config : DataConfig, optional
        Simulated physics and samples; a resumed run keeps its own. ``scale`` follows the
        architecture.
    resume : bool
        Continue the run in ``run_dir`` (model, optimizer, schedule, step and RNG).
    overwrite : bool
        Start afresh even if ``run_dir`` holds a run.
    init : path, optional
        Checkpoint whose weights start a new run (fine-tuning).
    device : str, optional
        ``"cpu"``, ``"cuda"``...; default CUDA when available.
    progress : bool
        Show a tqdm progress bar on stderr.
    """
    from dataclasses import replace

    run_dir = Path(run_dir)
    settings = dict(settings or {})
    unknown = set(settings) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise MLSimError(f"unknown training settings {sorted(unknown)}")
    last = run_dir / LAST_CHECKPOINT
    init_data = None
    resume_data = None
    base = TrainConfig()
    if resume:
        if init is not None:
            raise MLSimError("--resume and --init were both given; expected one of them")
        if not last.is_file():
            raise MLSimError(f"nothing to resume: {last} does not exist; expected a started run")
        resume_data = load_checkpoint(last)
        model_config = RCANConfig.from_dict(dict(resume_data["config"]))
        saved_preset = str(resume_data.get("preset", "custom"))
        if preset is not None and preset != saved_preset:
            raise MLSimError(f"run {run_dir} uses preset {saved_preset!r}; --preset is {preset!r}")
        preset = saved_preset
        data_config = DataConfig.from_dict(dict(resume_data["data"]))
        base = TrainConfig(**dict(resume_data["train"]))
    else:
        if last.is_file() and not overwrite:
            raise MLSimError(
                f"{run_dir} already holds a run ({last.name}); expected --resume or --overwrite"
            )
        if init is not None:
            init_data = load_checkpoint(init)
            init_data["source_path"] = str(init)
            model_config = RCANConfig.from_dict(dict(init_data["config"]))
            init_preset = str(init_data.get("preset", "custom"))
            if preset is not None and preset != init_preset:
                raise MLSimError(
                    f"init checkpoint {init} is preset {init_preset!r}; --preset is {preset!r}"
                )
            preset = init_preset
        else:
            preset = preset or "fast"
            model_config = preset_config(preset)
        data_config = data_config or DataConfig()
        if overwrite:
            for name in (LAST_CHECKPOINT, BEST_CHECKPOINT, TRAIN_LOG, VAL_LOG, METRICS_JSON):
                (run_dir / name).unlink(missing_ok=True)
            (run_dir / "validation_set.npz").unlink(missing_ok=True)
    if data_config.scale != model_config.scale:
        data_config = replace(data_config, scale=model_config.scale)
    if data_config.prior != model_config.prior:
        data_config = replace(data_config, prior=model_config.prior)
    train_config = replace(base, **settings)
    trainer = Trainer(
        run_dir,
        model_config,
        preset,
        train_config,
        data_config,
        choose_device(device),
        init=init_data,
    )
    if resume_data is not None:
        trainer.restore(resume_data)
        log.info("resuming %s at step %d of %d", run_dir, trainer.state.step, train_config.steps)
    if trainer.state.step >= train_config.steps:
        log.info("run already at step %d >= %d steps", trainer.state.step, train_config.steps)
        return dict(trainer.state.last_val)
    return trainer.run(progress=progress)
