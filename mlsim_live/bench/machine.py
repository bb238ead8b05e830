"""Facts of the machine a benchmark ran on, and peak-memory measurement."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import platform
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


# -- machine facts ---------------------------------------------------------------------------


def _version(dist: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _gpu_name() -> str | None:
    """The first GPU's name, from PyTorch when it is loaded, else from ``nvidia-smi``."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return str(torch.cuda.get_device_name(0))
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    names = [line.strip() for line in out.splitlines() if line.strip()]
    return names[0] if names else None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, load, OS, library versions and GPU of this machine."""
    from mlsim_live.engine.precision import instruction_sets
    from mlsim_live.engine.providers import cpu_model_name, physical_cores

    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    ort_dists = {d: _version(d) for d in ("onnxruntime", "onnxruntime-gpu") if _version(d)}
    return {
        "cpu_model": cpu_model_name(),
        "physical_cores": physical_cores(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "load_avg_1_5_15": load,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": ort_dists,
        "torch": _version("torch"),
        "gpu": _gpu_name(),
        "instruction_sets": instruction_sets(),
        "hostname": platform.node(),
    }


# -- memory ----------------------------------------------------------------------------------


def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class PeakMemory:
    """Peak resident memory of a block above the resident memory at its start.

    On Linux the kernel's high-water mark (``VmHWM``) is reset at the start through
    ``/proc/self/clear_refs``, so each block gets its own peak; elsewhere (or when that is
    refused) ``getrusage`` gives the process peak, which only shows blocks that raise it.
    """

    def __init__(self) -> None:
        self.kind = "rss_hwm"
        self.mb: float | None = None

    def __enter__(self) -> PeakMemory:
        gc.collect()
        self._rss0 = _status_kb("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.kind = "ru_maxrss"
        import resource  # Unix only; imported here so the live path works on Windows

        self._ru0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc: object) -> None:
        if self.kind == "rss_hwm" and self._rss0 is not None:
            hwm = _status_kb("VmHWM")
            self.mb = None if hwm is None else max(0.0, (hwm - self._rss0) / 1024.0)
        else:
            import resource

            ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            scale = 1024.0 if sys.platform != "darwin" else 1024.0 * 1024.0
            self.mb = max(0.0, (ru - self._ru0) / scale)


@contextlib.contextmanager
def _gpu_peak(torch: Any) -> Iterator[dict[str, float | None]]:
    """Peak GPU memory of a block: PyTorch's allocator peak, or the device's used-memory rise."""
    out: dict[str, float | None] = {"torch_mb": None, "device_mb": None}
    if torch is None or not torch.cuda.is_available():
        yield out
        return
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base_alloc = torch.cuda.memory_allocated()
    free0, _ = torch.cuda.mem_get_info()
    yield out
    torch.cuda.synchronize()
    out["torch_mb"] = (torch.cuda.max_memory_allocated() - base_alloc) / 2**20
    free1, _ = torch.cuda.mem_get_info()
    out["device_mb"] = max(0.0, (free0 - free1) / 2**20)
