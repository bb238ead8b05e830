"""The RCAN reconstructor: an ONNX-exported ML-SIM network run by ONNX Runtime."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlsim_live.engine import precision as prec
from mlsim_live.engine.ood import OODChecker, find_ranges
from mlsim_live.engine.session import GROUP_CHANNELS, OnnxSession, check_model_file
from mlsim_live.engine.tiling import pad_group, padded_length, run_tiled
from mlsim_live.errors import MLSimError
from mlsim_live.normalization import Normalization, normalization_for

log = logging.getLogger(__name__)

DEFAULT_TILE_SIZE = 1024
DEFAULT_TILE_OVERLAP = 32
DEFAULT_SIZE_MULTIPLE = 8
MIN_INPUT_SIZE = 16
CPU_WARMUP_HW = (128, 128)
GPU_WARMUP_HW = (512, 512)


def split_variant(model_path: Path) -> tuple[Path, str]:
    """``(fp32 model, precision)`` of a model file: ``NAME.int8.onnx`` -> ``(NAME.onnx, int8)``."""
    model_path = Path(model_path)
    for name in prec.STORED_PRECISIONS:
        tail = f".{name}"
        if name != prec.FP32 and model_path.stem.endswith(tail):
            return model_path.with_name(model_path.stem[: -len(tail)] + model_path.suffix), name
    return model_path, prec.FP32


def model_card_path(model_path: Path) -> Path:
    """The model card beside a model: ``NAME.json`` for ``NAME.onnx`` (and for its precision
    copies ``NAME_fp16.onnx`` and ``NAME.int8.onnx``)."""
    card = model_path.with_suffix(".json")
    if not card.is_file() and model_path.stem.endswith("_fp16"):
        card = model_path.with_name(model_path.stem[: -len("_fp16")] + ".json")
    base, precision = split_variant(model_path)
    if not card.is_file() and precision != prec.FP32:
        card = base.with_suffix(".json")
    return card


def read_model_card(model_path: Path, verify_sha256: bool = True) -> dict[str, Any]:
    """Read the model card of ``model_path``; an empty dict when there is none.

    A card that is not valid JSON, or whose ``sha256`` differs from the model file's, is logged
    as a warning (the model still runs; its card just cannot be trusted).
    """
    card_path = model_card_path(model_path)
    if not card_path.is_file():
        log.debug("no model card beside %s", model_path.name)
        return {}
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("model card %s is unreadable (%s); ignoring it", card_path, exc)
        return {}
    if not isinstance(card, dict):
        log.warning("model card %s is not a JSON object; ignoring it", card_path)
        return {}
    expected = card.get("sha256")
    if verify_sha256 and isinstance(expected, str) and card_path.stem == model_path.stem:
        digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
        if digest != expected.lower():
            log.warning(
                "model card %s gives sha256 %s... but %s has %s...; the card may describe "
                "another model",
                card_path.name,
                expected[:12],
                model_path.name,
                digest[:12],
            )
    return card


def _card_int(card: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        node: Any = card
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, int | float) and not isinstance(node, bool):
            return int(node)
    return None


def model_prior(model_path: Path) -> str:
    """The prior a model takes, from its card: ``"none"`` (end-to-end) or ``"wiener"``."""
    card = read_model_card(Path(model_path), verify_sha256=False)
    arch = card.get("architecture")
    prior = arch.get("prior") if isinstance(arch, dict) else None
    return str(prior) if isinstance(prior, str) else "none"


@dataclass(frozen=True)
class PreparedGroup:
    """One group made ready for the network (`RCANReconstructor.prepare`).

    Attributes
    ----------
    raw : ndarray
        The checked ``(9, H, W)`` group.
    x : ndarray or None
        The normalized network input ``(C, H, W)``; None when the group goes to the fallback.
    norm : Normalization or None
        Maps the network's output back to the input's units.
    extra : dict
        What the method needs to finish (e.g. the Wiener image and its estimate).
    fallback_reason : str or None
        Why the group cannot take this network (it goes to the method's fallback).
    """

    raw: np.ndarray
    x: np.ndarray | None
    norm: Normalization | None
    extra: dict[str, Any]
    fallback_reason: str | None = None


class RCANReconstructor:
    """Reconstructs SIM groups with an ONNX RCAN on ONNX Runtime.

    Implements the `mlsim_live.recon.base.Reconstructor` protocol. Each group is normalized
    once with `mlsim_live.normalization.normalization_for` (as in training), padded by
    reflection to the size multiple the model needs, run whole or in overlapping blended tiles
    (frames larger than ``tile_size``), cropped back and mapped back to the input's units.

    Parameters
    ----------
    model : str or Path, optional
        The ``.onnx`` file; None: the default shipped model (`mlsim_live.paths`).
    provider : str
        ``"auto"`` (TensorRT, then CUDA, then CPU, whichever works), ``"cpu"``, ``"cuda"`` or
        ``"tensorrt"``. A requested GPU provider that is unavailable falls back to CPU with a
        warning.
    fp16 : bool or None
        None: fp16 only where it is the natural fast path (TensorRT's engine); True: also a
        float16 model on CUDA (a sibling ``NAME_fp16.onnx`` or converted at load); False: fp32
        everywhere. The CPU runs the arithmetic of ``precision``.
    precision : {"auto", "fp32", "int8", "bf16"} or None
        Arithmetic of the model (`mlsim_live.engine.precision.resolve_precision`): ``int8``
        loads ``NAME.int8.onnx`` (made by ``mlsim-live quantize``), ``bf16`` is refused (ONNX
        Runtime has no bf16 convolution on the CPU), ``auto`` takes the fastest one the card
        records as accurate, else fp32. None: `mlsim_live.engine.precision.default_precision`
        (``auto``, or the CLI's ``--precision``). A precision copy given as the model
        (``NAME.int8.onnx``) runs as given under ``auto``.
    tile_size : int
        Largest input side (pixels) run in one piece; larger frames are tiled. Bounds memory.
    tile_overlap : int
        Minimum overlap of neighbouring tiles (input pixels); the blend ramp is this wide.
    threads : int, optional
        CPU threads; default: the number of physical cores.
    warmup : bool or (int, int)
        Run the model once at start so the first real group is not slow: True uses
        128 x 128 on CPU and 512 x 512 on GPU (cuDNN/TensorRT tune per shape, so pass the
        camera's frame size there), a pair gives the shape, False skips it.
    optics : Optics, optional
        The microscope's optics, for the out-of-distribution check.
    ood_every : int
        Estimate the physics for the OOD check on one group in this many (see
        `mlsim_live.engine.ood`).
    cache_dir : Path, optional
        TensorRT engine cache (default ``~/.cache/mlsim-live/tensorrt``).
    offset_adu : float, optional
        Camera offset (plus constant background) in the input's units. Given, it is the
        normalization's background and the scale is measured above it
        (``normalization_for(group, background=offset_adu)``); None: both are estimated per
        group exactly as in training.

    Attributes
    ----------
    name : str
        ``"rcan:<model file name>"``.
    provider : str
        The ONNX Runtime execution provider in use, e.g. ``"CPUExecutionProvider"``.
    scale : int
        Output pixels per input pixel (from the model card, checked against the model).
    card : dict
        The model card (empty when there is none).
    """

    #: Method name (``--method``) and the channels the network takes.
    method = "rcan"
    input_channels = GROUP_CHANNELS

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        provider: str = "auto",
        fp16: bool | None = None,
        tile_size: int = DEFAULT_TILE_SIZE,
        tile_overlap: int = DEFAULT_TILE_OVERLAP,
        threads: int | None = None,
        warmup: bool | tuple[int, int] = True,
        optics: Any = None,
        ood_every: int = 10,
        cache_dir: str | os.PathLike[str] | None = None,
        offset_adu: float | None = None,
        precision: str | None = None,
    ) -> None:
        if model is None:
            from mlsim_live.paths import default_model_path

            model = default_model_path(self.method)
        path = check_model_file(Path(model))
        self.card = read_model_card(path)
        path = self._choose_precision(path, precision, provider)
        self.path = path
        self._set_tiling(int(tile_size), int(tile_overlap))
        if offset_adu is not None and not np.isfinite(offset_adu):
            raise MLSimError(f"offset {offset_adu} ADU; expected a finite number")
        self.offset_adu = None if offset_adu is None else float(offset_adu)
        gpu_hint = GPU_WARMUP_HW if warmup is True else (warmup or GPU_WARMUP_HW)
        h, w = (padded_length(int(d), self.multiple) for d in gpu_hint)
        self.session = OnnxSession(
            path,
            provider=provider,
            fp16=fp16,
            threads=threads,
            opt_hw=(h, w),
            max_hw=(self.tile_size, self.tile_size),
            cache_dir=Path(cache_dir) if cache_dir else None,
            channels=self.input_channels,
        )
        self.name = f"{self.method}:{path.name}"
        self.provider: str = self.session.provider
        self.fp16 = self.session.fp16
        self.scale: int = self._check_output()
        self._set_ood_check(optics, ood_every)
        self.warmup_ms: float | None = None
        if warmup:
            hw = GPU_WARMUP_HW if self.session.on_gpu else CPU_WARMUP_HW
            if not isinstance(warmup, bool):
                hw = (int(warmup[0]), int(warmup[1]))
            self.warm_up(hw)

    def _set_tiling(self, tile_size: int, tile_overlap: int) -> None:
        """Check the tile size and overlap against the model's size multiple; keep them."""
        self.multiple = max(
            1, _card_int(self.card, "size_multiple", "input_multiple") or DEFAULT_SIZE_MULTIPLE
        )
        if tile_overlap < 0 or tile_size < max(2 * tile_overlap + self.multiple, MIN_INPUT_SIZE):
            raise MLSimError(
                f"tile size {tile_size} with overlap {tile_overlap}; expected overlap >= 0 and "
                f"tile size >= 2 x overlap + {self.multiple} (and >= {MIN_INPUT_SIZE})"
            )
        # tiles have the padded multiple themselves, so every tile has one shape
        self.tile_size = max(self.multiple, tile_size // self.multiple * self.multiple)
        self.tile_overlap = tile_overlap

    def _check_output(self) -> int:
        """The model's scale, probed (a card that says otherwise is warned about), after
        checking that it outputs one channel."""
        probed = self.session.probe_scale()
        card_scale = _card_int(self.card, "scale", "architecture.scale", "config.scale")
        if card_scale is not None and card_scale != probed:
            log.warning(
                "model card of %s says scale %d but the model outputs scale %d; using %d",
                self.path.name,
                card_scale,
                probed,
                probed,
            )
        self.session.scale = probed
        if self.session.out_channels not in (None, 1):
            raise MLSimError(
                f"model {self.path.name} has {self.session.out_channels} output channels; "
                "expected 1"
            )
        return probed

    def _set_ood_check(self, optics: Any, ood_every: int) -> None:
        """The out-of-distribution check of the card's training ranges (off without them)."""
        ranges = find_ranges(self.card)
        self._ood = OODChecker(ranges, optics=optics, every=ood_every) if ranges else None
        self._last_ood: list[str] = []
        if ranges is None:
            log.debug("model card of %s has no training ranges; OOD check off", self.path.name)

    def _choose_precision(self, path: Path, precision: str | None, provider: str) -> Path:
        """The file to load for ``precision``; sets ``precision`` and ``precision_reason``."""
        base, file_precision = split_variant(path)
        self.precision_reason = ""
        precision = prec.check_precision_name(precision or prec.default_precision())
        if file_precision != prec.FP32 and precision == prec.AUTO:
            self.precision = file_precision
            return path
        if file_precision != prec.FP32 and precision != file_precision:
            path = base  # an explicit request on a precision copy: resolve it for its model
        from mlsim_live.engine import providers as prov

        gpu = prov.resolve_provider(provider) in ("auto", prov.CUDA, prov.TENSORRT) and any(
            p in prov.available_providers() for p in (prov.CUDA, prov.TENSORRT)
        )
        choice = prec.resolve_precision(check_model_file(path), self.card, precision, on_gpu=gpu)
        self.precision = choice.precision
        self.precision_reason = choice.reason
        if choice.precision != prec.FP32:
            log.info("precision %s (%s): %s", choice.precision, choice.path.name, choice.reason)
        return check_model_file(choice.path)

    # -- Reconstructor protocol ---------------------------------------------------------------

    def reconstruct(self, group: np.ndarray) -> np.ndarray:
        """Reconstruct one group ``(9, H, W)`` into ``(scale*H, scale*W)`` float32."""
        return self.finish(self.prepare(group))

    def prepare(self, group: np.ndarray) -> PreparedGroup:
        """Check and normalize a group for the network (no inference): the first stage of
        `reconstruct`. It may run on another thread while `finish` runs an earlier group."""
        arr = np.asarray(group)
        self._check_group(arr)
        x, norm = self._model_input(arr)
        return PreparedGroup(arr, x, norm, {})

    def finish(self, prepared: PreparedGroup) -> np.ndarray:
        """Run the network on a prepared group; return ``(scale*H, scale*W)`` float32."""
        assert prepared.x is not None and prepared.norm is not None
        return self._infer(prepared.raw, prepared.x, prepared.norm)

    @staticmethod
    def _check_group(arr: np.ndarray) -> None:
        """Raise `MLSimError` unless ``arr`` is a finite, real ``(9, H, W)`` group."""
        if arr.ndim != 3 or arr.shape[0] != GROUP_CHANNELS:
            raise MLSimError(f"SIM group has shape {arr.shape}; expected ({GROUP_CHANNELS}, H, W)")
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise MLSimError(f"SIM group has dtype {arr.dtype}; expected real numbers")
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise MLSimError("SIM group contains NaN or infinite values; expected finite values")

    def _model_input(self, arr: np.ndarray) -> tuple[np.ndarray, Normalization]:
        """The normalized network input ``(C, H, W)`` of a checked group, and its normalization."""
        norm = normalization_for(arr, background=self.offset_adu)
        return norm.apply(arr), norm

    def _infer(self, arr: np.ndarray, x: np.ndarray, norm: Normalization) -> np.ndarray:
        """Pad, run whole or tiled, crop and map back to the input's units."""
        _, h, w = arr.shape
        x = pad_group(x, self.multiple, MIN_INPUT_SIZE)
        _, hp, wp = x.shape
        if hp <= self.tile_size and wp <= self.tile_size:
            y = self._run_one(x)
        else:
            y = run_tiled(
                x, self._run_one, self.scale, self.tile_size, self.tile_overlap, self.multiple
            )
        s = self.scale
        return norm.invert(np.ascontiguousarray(y[: s * h, : s * w]))

    # -- extras -------------------------------------------------------------------------------

    def _run_one(self, x: np.ndarray) -> np.ndarray:
        """Run one normalized ``(9, h, w)`` array; return ``(s*h, s*w)`` float32."""
        return self.session.run(x[None])[0, 0]

    def warm_up(self, hw: tuple[int, int]) -> float:
        """Run the model once on an input of ``hw`` (padded as real inputs are); return ms."""
        hp, wp = (min(padded_length(d, self.multiple, MIN_INPUT_SIZE), self.tile_size) for d in hw)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((self.input_channels, hp, wp), dtype=np.float32) * 0.1
        t0 = time.perf_counter()
        self._run_one(x)
        self.warmup_ms = (time.perf_counter() - t0) * 1e3
        log.debug("warm-up %s x %s on %s: %.0f ms", hp, wp, self.provider, self.warmup_ms)
        return self.warmup_ms

    def check_ood(self, group: np.ndarray, *, warn: bool = True, fresh: bool = False) -> list[str]:
        """Reasons why ``group`` lies outside the model's training ranges (empty: inside).

        The physics is estimated on one group in ``ood_every`` (see `mlsim_live.engine.ood`);
        a warning is logged when the verdict changes to out-of-distribution. Returns an empty
        list when the model card records no ranges.

        Parameters
        ----------
        group : ndarray
            ``(9, H, W)`` raw group.
        warn : bool
            Log the warning (False: the caller reports, e.g. once per file in a batch).
        fresh : bool
            Estimate on this group now and restart the ``ood_every`` count (the first group
            of a new file or acquisition).
        """
        if self._ood is None:
            return []
        if fresh:
            self._ood.reset()
        reasons = self._ood.check(group)
        if warn and reasons and reasons != self._last_ood:
            log.warning(
                "input is outside the training range of %s: %s", self.path.name, "; ".join(reasons)
            )
        self._last_ood = reasons
        return reasons

    def is_out_of_distribution(self, group: np.ndarray) -> bool:
        """True when `check_ood` finds a reason (used by the live worker's ``ood_groups``)."""
        return bool(self.check_ood(group))

    @property
    def training_ranges(self) -> Any:
        """The training physics ranges from the model card (None when unknown)."""
        return self._ood.ranges if self._ood is not None else None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.path.name!r}, provider={self.provider!r}, "
            f"scale={self.scale}, fp16={self.fp16}, precision={self.precision!r}, "
            f"tile_size={self.tile_size})"
        )
