"""Training loop of the RCAN on simulated data: checkpoints, resume, validation, plots.

The settings live in `mlsim_live.model.train_config`, the device and arithmetic in
`mlsim_live.model.device`, the loss and validation metrics in `mlsim_live.model.losses`,
checkpoints in `mlsim_live.model.checkpoints` and the logs and plot in
`mlsim_live.model.training_log`; their public names are re-exported here.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlsim_live.errors import MLSimError
from mlsim_live.model.checkpoints import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    _atomic_write_bytes,
    atomic_write_text,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from mlsim_live.model.data import (
    DataConfig,
    SimulatedDataset,
    ValidationSet,
    validation_set,
)
from mlsim_live.model.device import (
    _rng_state,
    _set_rng_state,
    choose_device,
    cpu_has_bf16,
    use_bf16,
)
from mlsim_live.model.losses import LOW_PHOTONS, evaluate, psnr, ssim_torch, training_loss
from mlsim_live.model.rcan import RCANConfig, build_model, count_parameters, preset_config
from mlsim_live.model.train_config import TrainConfig, _lr_factor
from mlsim_live.model.training_log import _read_csv, _write_csv, plot_training

__all__ = [
    "BEST_CHECKPOINT",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "LAST_CHECKPOINT",
    "LOW_PHOTONS",
    "METRICS_JSON",
    "PLOT_PNG",
    "RUN_JSON",
    "TRAIN_LOG",
    "VAL_LOG",
    "RunState",
    "TrainConfig",
    "Trainer",
    "atomic_write_text",
    "choose_device",
    "cpu_has_bf16",
    "evaluate",
    "load_checkpoint",
    "model_from_checkpoint",
    "plot_training",
    "psnr",
    "save_checkpoint",
    "ssim_torch",
    "train",
    "training_loss",
    "use_bf16",
]

log = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
TRAIN_LOG = "train_log.csv"
VAL_LOG = "val_log.csv"
METRICS_JSON = "metrics.json"
PLOT_PNG = "training.png"
RUN_JSON = "run.json"


@dataclass
class RunState:
    """What a run has done so far (kept in every checkpoint)."""

    step: int = 0
    train_seconds: float = 0.0
    best_val_psnr: float = -math.inf
    last_val: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------- training


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
                val = self._val = validation_set(self.data_config, self.config.val_size)

                def write(fh: Any) -> None:
                    np.savez(
                        fh,
                        x=val.x,
                        y=val.y,
                        peak_photons=val.peak_photons,
                        kinds=np.array(val.kinds),
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
        cfg = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.write_run_json()
        self.validation()
        if self.state.step == 0:
            self.validate_and_log()
        loader = self._loader()
        bar = self._progress_bar(progress)
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
                window.append(self._optimizer_step(x, y))
                now = time.perf_counter()
                self.state.train_seconds += now - t_last
                t_last = now
                bar.update(1)
                if self.state.step % log_every == 0 or self.state.step == cfg.steps:
                    shown_loss = float(np.mean(window))
                    pending.append(self._train_row(shown_loss))
                    bar.set_postfix(loss=f"{shown_loss:.4f}")
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

    def _loader(self) -> Any:
        """The simulated training stream, continued at the run's step."""
        from torch.utils.data import DataLoader

        cfg = self.config
        dataset = SimulatedDataset(
            self.data_config, seed=cfg.seed, stream=self.state.step, reuse=cfg.data_reuse
        )
        return DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            num_workers=cfg.workers,
            persistent_workers=False,
            prefetch_factor=4 if cfg.workers > 0 else None,
        )

    def _progress_bar(self, progress: bool) -> Any:
        from tqdm import tqdm

        return tqdm(
            total=self.config.steps,
            initial=self.state.step,
            disable=not progress,
            dynamic_ncols=True,
            mininterval=0.5 if sys.stderr.isatty() else 30.0,
            desc="train",
        )

    def _optimizer_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One step on the batch ``(x, y)``; returns its loss."""
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(x)
        loss = training_loss(out.float(), y, self.config.ssim_weight)
        if not torch.isfinite(loss):
            raise MLSimError(
                f"training loss became {loss.item()} at step {self.state.step}; "
                "expected a finite loss (lower --lr)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.state.step += 1
        return float(loss.item())

    def _train_row(self, mean_loss: float) -> dict[str, float]:
        return {
            "step": float(self.state.step),
            "loss": mean_loss,
            "lr": float(self.scheduler.get_last_lr()[0]),
            "seconds": round(self.state.train_seconds, 2),
        }

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
