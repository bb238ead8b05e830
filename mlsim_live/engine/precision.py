"""Arithmetic precision of the learned models on the CPU: fp32, int8 (static QDQ) and bf16.

A model ``NAME.onnx`` may have an int8 sibling ``NAME.int8.onnx`` made by
`mlsim_live.engine.quantize` (``mlsim-live quantize``); its card ``NAME.json`` records, per
precision, the held-out accuracy change against fp32 (``card["precisions"]``). `resolve_precision`
turns ``--precision fp32|bf16|int8|auto`` into the file to load, or refuses in one line when this
CPU lacks the instructions or the card has no such precision.

bf16: ONNX Runtime's CPU execution provider has no bfloat16 convolution kernel (probed on
onnxruntime 1.32: a bf16 ``Conv`` is NOT_IMPLEMENTED; only arm64 has a bf16 fast-math GEMM), so
``bf16`` is refused with that reason even on CPUs with AVX512-BF16, never run as fp32 silently.
"""

from __future__ import annotations

import functools
import logging
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlsim_live.errors import MLSimError

log = logging.getLogger(__name__)

FP32 = "fp32"
BF16 = "bf16"
INT8 = "int8"
AUTO = "auto"
PRECISIONS = (FP32, BF16, INT8, AUTO)
#: Precisions a model file can be stored in (``auto`` chooses one of them).
STORED_PRECISIONS = (FP32, BF16, INT8)

#: ``auto`` offers no precision that loses more than this on the held-out simulated set...
MAX_PSNR_LOSS_DB = 0.1
#: ... or changes the real-data judge's FRC resolution by more than this fraction.
MAX_FRC_CHANGE = 0.05

#: CPU flags (``/proc/cpuinfo``) that matter for the model's arithmetic, by what they speed up.
INSTRUCTION_SETS = {
    "fp32": ("avx2", "fma", "avx512f"),
    "int8": ("avx_vnni", "avx512_vnni", "amx_int8", "asimddp", "i8mm"),
    "bf16": ("avx512_bf16", "amx_bf16", "bf16"),
    "fp16": ("f16c", "avx512_fp16", "amx_fp16", "fphp"),
}
#: Instructions that make int8 convolutions fast (dot products of 8-bit numbers).
INT8_INSTRUCTIONS = INSTRUCTION_SETS["int8"]


_default_precision = AUTO


def set_default_precision(precision: str) -> None:
    """The precision of reconstructors built without one (the CLI's ``--precision``)."""
    global _default_precision
    _default_precision = check_precision_name(precision)


def default_precision() -> str:
    """The precision of reconstructors built without one: ``auto`` unless set."""
    return _default_precision


@functools.cache
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (``flags`` on x86, ``Features`` on arm), lower case."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return frozenset(value.lower().split())
    return frozenset()


def instruction_sets(flags: frozenset[str] | None = None) -> dict[str, list[str]]:
    """The relevant instruction sets this CPU has, per arithmetic (``fp32``, ``int8``, ...)."""
    have = cpu_flags() if flags is None else flags
    return {kind: [f for f in names if f in have] for kind, names in INSTRUCTION_SETS.items()}


def variant_path(model: Path, precision: str) -> Path:
    """Where the ``precision`` copy of ``model`` lives: ``NAME.<precision>.onnx`` (fp32: itself)."""
    model = Path(model)
    if precision == FP32:
        return model
    return model.with_name(f"{model.stem}.{precision}{model.suffix}")


def int8_unsupported(flags: frozenset[str] | None = None) -> str | None:
    """None when this CPU has 8-bit dot-product instructions, else why int8 is refused."""
    have = cpu_flags() if flags is None else flags
    if any(f in have for f in INT8_INSTRUCTIONS):
        return None
    return (
        f"this CPU ({platform.machine()}) lacks 8-bit dot-product instructions "
        f"({', '.join(INT8_INSTRUCTIONS)}), so int8 would be slower than fp32"
    )


@functools.cache
def _ort_bf16_conv() -> bool:
    """True when this onnxruntime's CPU execution provider can run a bfloat16 convolution."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return False
    bf16 = TensorProto.BFLOAT16
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        "bf16_probe",
        [helper.make_tensor_value_info("x", bf16, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", bf16, [1, 1, 4, 4])],
        [helper.make_tensor("w", bf16, [1, 1, 3, 3], [0] * 9)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:  # NOT_IMPLEMENTED (no kernel) or an older opset table
        return False
    return True


def bf16_unsupported(flags: frozenset[str] | None = None) -> str:
    """Why bf16 inference is refused here (there is always a reason today; see module doc)."""
    have = cpu_flags() if flags is None else flags
    if not any(f in have for f in INSTRUCTION_SETS["bf16"]):
        return "this CPU lacks bf16 instructions (avx512_bf16, amx_bf16)"
    if not _ort_bf16_conv():
        return (
            "ONNX Runtime's CPU execution provider has no bfloat16 convolution kernel "
            "(this CPU has bf16 instructions, but they cannot be used for the model)"
        )
    return "no bf16 model exists for it (mlsim-live quantize makes int8 only)"


def card_precisions(card: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The card's per-precision figures (``card["precisions"]``), empty when it has none."""
    entry = card.get("precisions") if isinstance(card, dict) else None
    return (
        {k: v for k, v in entry.items() if isinstance(v, dict)} if isinstance(entry, dict) else {}
    )


def accuracy_verdict(entry: dict[str, Any]) -> str | None:
    """None when a card entry meets `MAX_PSNR_LOSS_DB` and `MAX_FRC_CHANGE`, else why not."""
    delta = entry.get("psnr_delta_db")
    if not isinstance(delta, int | float):
        return "the card records no held-out PSNR change for it"
    if delta < -MAX_PSNR_LOSS_DB:
        return f"it loses {-delta:.2f} dB held-out PSNR (more than {MAX_PSNR_LOSS_DB} dB)"
    frc = entry.get("judge_frc_change")
    if isinstance(frc, int | float) and abs(frc) > MAX_FRC_CHANGE:
        return (
            f"it changes the real-data FRC resolution by {100 * frc:+.1f} % "
            f"(more than {100 * MAX_FRC_CHANGE:.0f} %)"
        )
    return None


@dataclass(frozen=True)
class PrecisionChoice:
    """What `resolve_precision` decided.

    Attributes
    ----------
    precision : str
        ``fp32`` or ``int8``: the arithmetic that will run.
    path : Path
        The ONNX file to load for it.
    requested : str
        What was asked for (``auto`` included).
    reason : str
        Why ``auto`` chose it (empty for an explicit request).
    """

    precision: str
    path: Path
    requested: str
    reason: str = ""


def check_precision_name(precision: str) -> str:
    """``precision`` in lower case; `MLSimError` unless it is one of `PRECISIONS`."""
    name = str(precision).strip().lower()
    if name not in PRECISIONS:
        raise MLSimError(
            f"precision {precision!r} is unknown; expected one of {', '.join(PRECISIONS)}"
        )
    return name


def resolve_precision(
    model: Path, card: dict[str, Any], requested: str, on_gpu: bool = False
) -> PrecisionChoice:
    """The file and arithmetic for ``requested`` (``fp32``, ``bf16``, ``int8`` or ``auto``).

    Explicit requests are refused (`MLSimError`, one line) when the CPU lacks the instructions
    or the card has no such precision (or its file is missing). ``auto`` takes the fastest
    precision the card records as accurate (`accuracy_verdict`) whose file exists and which
    this CPU supports, else fp32. On a GPU execution provider ``auto`` is fp32 (GPUs have their
    own fp16 options).
    """
    name = check_precision_name(requested)
    model = Path(model)
    entries = card_precisions(card)
    if name == FP32:
        return PrecisionChoice(FP32, model, name)
    if name == BF16:
        raise MLSimError(
            f"--precision bf16 is refused: {bf16_unsupported()}; expected fp32, int8 or auto"
        )
    if name == INT8:
        reason = _int8_missing(model, entries)
        if reason:
            raise MLSimError(f"--precision int8 is refused: {reason}")
        return PrecisionChoice(INT8, variant_path(model, INT8), name)
    # auto
    if on_gpu:
        return PrecisionChoice(FP32, model, name, "GPU execution provider: fp32 (see --fp16)")
    candidates = []
    for precision, entry in entries.items():
        if precision == FP32 or precision not in STORED_PRECISIONS:
            continue
        why_not = accuracy_verdict(entry) or (
            _int8_missing(model, entries) if precision == INT8 else bf16_unsupported()
        )
        if why_not:
            log.info("auto precision: not %s: %s", precision, why_not)
            continue
        speed = entry.get("speedup_vs_fp32")
        if isinstance(speed, int | float) and speed > 1.0:
            candidates.append((float(speed), precision))
    if not candidates:
        return PrecisionChoice(FP32, model, name, "no faster precision is recorded as accurate")
    speed, best = max(candidates)
    return PrecisionChoice(
        best, variant_path(model, best), name, f"{best}: {speed:.2f}x fp32, accurate per the card"
    )


def _int8_missing(model: Path, entries: dict[str, dict[str, Any]]) -> str | None:
    """Why the int8 copy of ``model`` cannot run here (None when it can)."""
    cpu = int8_unsupported()
    if cpu:
        return cpu
    path = variant_path(model, INT8)
    if INT8 not in entries:
        return (
            f"the model card of {model.name} has no int8 entry; expected one made by "
            f"`mlsim-live quantize {model.name}`"
        )
    if not path.is_file():
        return f"{path.name} is missing beside {model.name}; make it with `mlsim-live quantize`"
    return None
