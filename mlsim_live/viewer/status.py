"""Text of the viewer's status bar, from the pipeline's statistics (no Qt)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

_MISSING = "–"


def _number(value: Any) -> float | None:
    """Return ``value`` as a finite float, or None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _count(stats: Mapping[str, Any], key: str) -> str:
    number = _number(stats.get(key))
    return _MISSING if number is None else str(int(number))


def model_label(model: Any) -> str:
    """Short model name for display: the file name of a path, a card's ``name``, or ``str``."""
    if model is None or model == "":
        return _MISSING
    if isinstance(model, Mapping):
        for key in ("name", "path", "file"):
            if model.get(key):
                return model_label(model[key])
        return _MISSING
    text = str(model)
    prefix, sep, rest = text.partition(":")
    if sep and ("/" in rest or os.sep in rest):  # "rcan:/models/x.onnx" -> "rcan:x.onnx"
        return f"{prefix}:{os.path.basename(rest)}"
    if "/" in text or os.sep in text:
        return os.path.basename(text.rstrip("/" + os.sep)) or text
    return text


def status_text(
    stats: Mapping[str, Any] | None,
    *,
    sr_fps: float | None,
    provider: str | None = None,
    model: str | None = None,
    latency_ms: float | None = None,
) -> str:
    """Compose the status-bar line.

    Parameters
    ----------
    stats : mapping or None
        The pipeline statistics (keys of ``*_summary.json``: ``groups_acquired``,
        ``groups_reconstructed``, ``groups_dropped``, ``errors``, ``latency_ms`` with
        ``p50``/``p95``, ``provider``, ``model``). None when no statistics are wired.
    sr_fps : float or None
        Rate of reconstructions arriving at the viewer, per second; None falls back to
        ``stats["sr_groups_per_s"]``.
    provider, model, latency_ms
        Fallbacks from the newest result, used where ``stats`` lacks a value.

    Returns
    -------
    str
        e.g. ``"SR 8.2 frames/s · latency p50 95 ms · dropped 3 · errors 0 · groups 40/43 ·
        CPUExecutionProvider · model mlsim_default.onnx"``.
    """
    stats = stats or {}
    if sr_fps is None:  # no recent arrivals: the run's average, when the pipeline gives one
        sr_fps = _number(stats.get("sr_groups_per_s"))
    fps = _MISSING if sr_fps is None else f"{sr_fps:.1f}"
    latency = stats.get("latency_ms")
    p50 = _number(latency.get("p50")) if isinstance(latency, Mapping) else _number(latency)
    if p50 is None:
        p50 = _number(latency_ms)
    p50_text = _MISSING if p50 is None else f"{p50:.0f} ms"
    parts = [
        f"SR {fps} frames/s",
        f"latency p50 {p50_text}",
        f"dropped {_count(stats, 'groups_dropped')}",
        f"errors {_count(stats, 'errors')}",
    ]
    if "groups_reconstructed" in stats or "groups_acquired" in stats:
        parts.append(
            f"groups {_count(stats, 'groups_reconstructed')}/{_count(stats, 'groups_acquired')}"
        )
    parts.append(str(stats.get("provider") or provider or _MISSING))
    parts.append(f"model {model_label(stats.get('model') or model)}")
    return " · ".join(parts)
