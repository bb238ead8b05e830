"""Latency of every available reconstruction backend on one simulated group, side by side.

Models: the default shipped model and the ``paper`` architecture (random weights: timing does
not depend on them). Backends: PyTorch eager fp32 (CPU, and CUDA when present), ONNX Runtime
on CPU, CUDA fp32/fp16 and TensorRT fp16 (when available), and the Wiener reconstruction (with
its pattern estimate reused, as in live use, and with estimation on every group). Every figure
covers the whole ``reconstruct`` call (normalization, padding and copies included).
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlsim_live.errors import MLSimError

# timing lives in mlsim_live.latency (the live path uses it too); re-exported here
from mlsim_live.latency import MIN_REPEATS as MIN_REPEATS
from mlsim_live.latency import summarize_ms as summarize_ms
from mlsim_live.latency import time_calls as time_calls

log = logging.getLogger(__name__)

TORCH_CPU = "torch-cpu"
TORCH_CUDA = "torch-cuda"
ORT_CPU = "ort-cpu"
ORT_CUDA = "ort-cuda"
ORT_CUDA_FP16 = "ort-cuda-fp16"
ORT_TRT_FP16 = "ort-tensorrt-fp16"
WIENER = "wiener"
WIENER_ESTIMATE = "wiener-estimate"
TRUST = "trust"

MODEL_BACKENDS = (TORCH_CPU, TORCH_CUDA, ORT_CPU, ORT_CUDA, ORT_CUDA_FP16, ORT_TRT_FP16)
ALL_BACKENDS = (*MODEL_BACKENDS, WIENER, WIENER_ESTIMATE, TRUST)
DEFAULT_MODELS = ("default", "paper")
#: Which PyTorch eager row a backend's ratio refers to (same device).
RATIO_REFERENCE = {
    TORCH_CPU: TORCH_CPU,
    ORT_CPU: TORCH_CPU,
    TORCH_CUDA: TORCH_CUDA,
    ORT_CUDA: TORCH_CUDA,
    ORT_CUDA_FP16: TORCH_CUDA,
    ORT_TRT_FP16: TORCH_CUDA,
}


@dataclass(frozen=True)
class BenchConfig:
    """What to benchmark.

    Attributes
    ----------
    size : int
        Frame side in pixels (the group is 9 x size x size).
    repeats : int
        Timed runs per backend (after one untimed warm-up run).
    max_time_s : float
        Stop a backend's timed runs after this long, once ``min(3, repeats)`` are done.
    models : tuple of str
        ``"default"``, ``"paper"`` (or another preset name), or paths of ``.onnx`` files.
    backends : tuple of str
        Subset of `ALL_BACKENDS`.
    threads : int or None
        CPU threads for ONNX Runtime and PyTorch; None: physical cores.
    seed : int
        Seed of the simulated input group and of the random weights.
    parity : bool
        Also compare the outputs of the backends on the same weights (max abs difference).
    """

    size: int = 512
    repeats: int = 10
    max_time_s: float = 60.0
    models: tuple[str, ...] = DEFAULT_MODELS
    backends: tuple[str, ...] = ALL_BACKENDS
    threads: int | None = None
    seed: int = 0
    parity: bool = False

    def __post_init__(self) -> None:
        if self.size < 16:
            raise MLSimError(f"bench size is {self.size}; expected >= 16 pixels")
        if self.repeats < 1:
            raise MLSimError(f"bench repeats is {self.repeats}; expected >= 1")
        unknown = [b for b in self.backends if b not in ALL_BACKENDS]
        if unknown:
            raise MLSimError(f"unknown backends {unknown}; expected some of {list(ALL_BACKENDS)}")
        if not self.models and not any(b.startswith(WIENER) or b == TRUST for b in self.backends):
            raise MLSimError("nothing to benchmark; expected at least one model or wiener")


@dataclass
class BenchRow:
    """Figures of one (model, backend) pair."""

    model: str
    backend: str
    provider: str
    precision: str
    latency_ms: dict[str, float]
    groups_per_s: float
    n: int
    init_s: float
    peak_mem_mb: float | None
    peak_mem_kind: str
    ratio_vs_torch_eager: float | None = None
    note: str = ""


@dataclass
class BenchModel:
    """A model to time: its ONNX file and, with torch, an equivalent PyTorch module."""

    label: str
    onnx_path: Path | None
    torch_module: Any = None
    architecture: dict[str, Any] | None = None
    note: str = ""
    torch_same_weights: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


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
    from mlsim_live.engine.providers import cpu_model_name, physical_cores

    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
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


# -- inputs and models -----------------------------------------------------------------------


def bench_group(size: int, seed: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """The simulated input group used for every backend, and its physical parameters."""
    from mlsim_live.sim import Camera, Optics, Pattern, Signal, SIMParams, simulate_group

    params = SIMParams(
        optics=Optics(na=1.4, wavelength_nm=525, pixel_size_um=0.08),
        pattern=Pattern(frequency_fraction=0.85, angle_offset_deg=10.0, modulation=0.8),
        signal=Signal(peak_photons=1000, background_photons=20, haze_fraction=0.3, unevenness=0.2),
        camera=Camera(kind="scmos", offset_adu=100, gain_adu_per_e=0.5, read_noise_e=1.5),
    )
    sim = simulate_group(params, sample="filaments", size=size, seed=seed)
    return sim.raw, {
        "sample": "filaments",
        "seed": seed,
        "shape": list(sim.raw.shape),
        "dtype": str(sim.raw.dtype),
        "params": sim.to_dict(),
    }


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch


def _find_architecture(card: dict[str, Any]) -> dict[str, Any] | None:
    """The RCAN config dict (with ``n_resgroups``) anywhere in a model card."""
    stack: list[Any] = [card]
    while stack:
        item = stack.pop(0)
        if isinstance(item, dict):
            if "n_resgroups" in item and "n_feats" in item:
                return item
            stack.extend(item.values())
    return None


def export_random_onnx(module: Any, path: Path) -> Path:
    """Export a PyTorch RCAN to ONNX with the project's exporter (parity-checked, with card)."""
    try:
        from mlsim_live.model.export import export_onnx
    except ImportError as exc:
        raise MLSimError(
            f"the ONNX exporter is unavailable ({exc}); expected mlsim_live.model.export"
        ) from exc
    export_onnx(module, path, overwrite=True, parity_sizes=(32,))
    return path


def prepare_models(
    names: tuple[str, ...], tmpdir: Path, seed: int = 0, want_torch: bool = True
) -> tuple[list[BenchModel], list[dict[str, str]]]:
    """Resolve model names to ONNX files (exporting random-weight presets) and torch modules."""
    from mlsim_live.engine.rcan import read_model_card

    torch = _import_torch() if want_torch else None
    models: list[BenchModel] = []
    skipped: list[dict[str, str]] = []
    for name in names:
        if name == "default" or name.endswith(".onnx"):
            if name == "default":
                from mlsim_live.paths import default_model_path

                try:
                    path = default_model_path()
                except MLSimError as exc:
                    skipped.append({"model": name, "backend": "*", "reason": str(exc)})
                    continue
            else:
                path = Path(name)
                if not path.is_file():
                    raise MLSimError(f"model file {path} does not exist; expected an .onnx file")
            card = read_model_card(path, verify_sha256=False)
            arch = _find_architecture(card)
            module = None
            note = ""
            if torch is not None and arch is not None:
                from mlsim_live.model.rcan import RCANConfig, build_model

                torch.manual_seed(seed)
                known = {k: v for k, v in arch.items() if k in RCANConfig.__dataclass_fields__}
                module = build_model(RCANConfig.from_dict(known)).eval()
                note = "PyTorch rows: same architecture, random weights"
            elif torch is not None:
                note = "no architecture in the model card: no PyTorch rows"
            label = f"default ({path.name})" if name == "default" else path.name
            models.append(BenchModel(label, path, module, arch, note))
            continue
        # a preset name: random weights, exported to a temporary ONNX file
        if torch is None:
            skipped.append(
                {
                    "model": name,
                    "backend": "*",
                    "reason": "torch is not installed (pip install 'mlsim-live[train]')",
                }
            )
            continue
        from mlsim_live.model.rcan import build_model

        torch.manual_seed(seed)
        module = build_model(name).eval()
        onnx_path = tmpdir / f"{name}_random.onnx"
        try:
            export_random_onnx(module, onnx_path)
        except MLSimError as exc:
            skipped.append({"model": name, "backend": "ort-*", "reason": str(exc)})
            onnx_path = None
        models.append(
            BenchModel(
                f"{name} (random weights)",
                onnx_path,
                module,
                module.config.to_dict(),
                "random weights",
                torch_same_weights=True,
            )
        )
    return models, skipped


# -- backends --------------------------------------------------------------------------------


def _torch_runner(module: Any, device: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """A reconstruct() on PyTorch eager with the same normalization and padding as ONNX."""
    import torch

    from mlsim_live.engine.rcan import DEFAULT_SIZE_MULTIPLE, MIN_INPUT_SIZE
    from mlsim_live.engine.tiling import pad_group
    from mlsim_live.normalization import normalization_for

    torch.set_num_threads(threads)
    model = module.to(device).eval()
    scale = int(model.config.scale)

    def run(group: np.ndarray) -> np.ndarray:
        norm = normalization_for(group)
        x = pad_group(norm.apply(group), DEFAULT_SIZE_MULTIPLE, MIN_INPUT_SIZE)
        with torch.inference_mode():
            y = model(torch.from_numpy(np.ascontiguousarray(x[None])).to(device))
            y = y[0, 0].float().cpu().numpy()
        h, w = group.shape[1:]
        return norm.invert(y[: scale * h, : scale * w])

    return run


@dataclass(frozen=True)
class _OrtVariant:
    provider: str
    fp16: bool | None
    precision: str


ORT_VARIANTS = {
    ORT_CPU: _OrtVariant("cpu", False, "fp32"),
    ORT_CUDA: _OrtVariant("cuda", False, "fp32"),
    ORT_CUDA_FP16: _OrtVariant("cuda", True, "fp16"),
    ORT_TRT_FP16: _OrtVariant("tensorrt", True, "fp16"),
}


def _ort_available(backend: str, available: list[str]) -> str | None:
    """None when ``backend`` can run here, else the reason it cannot."""
    from mlsim_live.engine import providers as prov

    need = {
        ORT_CPU: prov.CPU,
        ORT_CUDA: prov.CUDA,
        ORT_CUDA_FP16: prov.CUDA,
        ORT_TRT_FP16: prov.TENSORRT,
    }[backend]
    if need not in available:
        return f"{need} is not in this onnxruntime build ({', '.join(available)})"
    return None


def _wiener_runners(optics: Any) -> dict[str, tuple[Callable[[np.ndarray], np.ndarray], str]]:
    """The Wiener reconstruction with its estimate reused (live use) and estimated each time."""

    def make(reuse: bool) -> Any:
        try:
            from mlsim_live.recon import make_reconstructor

            return make_reconstructor("wiener", optics=optics, reuse_estimate=reuse)
        except (ImportError, TypeError):
            from mlsim_live.recon.wiener import WienerReconstructor

            return WienerReconstructor(optics=optics, reuse_estimate=reuse)

    reused = make(True)
    fresh = make(False)
    return {
        WIENER: (reused.reconstruct, "pattern estimate reused between groups (live use)"),
        WIENER_ESTIMATE: (fresh.reconstruct, "pattern estimated on every group"),
    }


# -- the benchmark ---------------------------------------------------------------------------


def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Benchmark every requested and available backend; return the JSON-able report."""
    from mlsim_live.engine import providers as prov

    threads = config.threads or prov.physical_cores()
    started = datetime.datetime.now(datetime.timezone.utc).astimezone()
    machine = machine_info()
    group, input_info = bench_group(config.size, config.seed)
    rows: list[BenchRow] = []
    skipped: list[dict[str, str]] = []
    parity: list[dict[str, Any]] = []
    try:
        available = prov.available_providers()
    except MLSimError as exc:
        available = []
        skipped.append({"model": "*", "backend": "ort-*", "reason": str(exc)})
    want_torch = any(b.startswith("torch") for b in config.backends) or config.parity
    # torch also measures GPU memory for the ONNX Runtime GPU rows; importing it costs seconds
    gpu_rows = any(
        b in ORT_VARIANTS and b != ORT_CPU and _ort_available(b, available) is None
        for b in config.backends
    )
    torch = _import_torch() if want_torch or gpu_rows else None

    with tempfile.TemporaryDirectory(prefix="mlsim-bench-") as tmp:
        models, model_skips = prepare_models(
            config.models, Path(tmp), config.seed, want_torch=want_torch
        )
        skipped.extend(model_skips)
        unavailable = _unavailable_backends(config.backends, torch, available)
        skipped.extend({"model": "*", "backend": b, "reason": r} for b, r in unavailable.items())
        for model in models:
            outputs: dict[str, np.ndarray] = {}
            for backend in config.backends:
                if backend.startswith(WIENER) or backend == TRUST or backend in unavailable:
                    continue
                row, out, reason = _bench_model_backend(
                    model, backend, group, config, threads, torch, available
                )
                if reason:
                    skipped.append({"model": model.label, "backend": backend, "reason": reason})
                    continue
                assert row is not None
                rows.append(row)
                same_weights = backend not in (TORCH_CPU, TORCH_CUDA) or model.torch_same_weights
                if out is not None and same_weights:
                    outputs[backend] = out
            if config.parity and len(outputs) > 1:
                parity.append(_parity(model.label, outputs))
        wiener_wanted = [b for b in config.backends if b.startswith(WIENER)]
        if wiener_wanted:
            rows_w, skips_w = _bench_wiener(wiener_wanted, group, input_info, config)
            rows.extend(rows_w)
            skipped.extend(skips_w)
        if TRUST in config.backends:
            rows_t, skips_t = _bench_trust(group, input_info, config)
            rows.extend(rows_t)
            skipped.extend(skips_t)

    _add_ratios(rows)
    try:
        load_end = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load_end = None
    report: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "machine": machine,
        "load_avg_at_end": load_end,
        "config": {**asdict(config), "threads": threads},
        "input": input_info,
        "results": [asdict(r) for r in rows],
        "skipped": skipped,
        "notes": [
            "latency = one whole reconstruct() call: normalization, padding, copies, inference",
            "ratio_vs_torch_eager = PyTorch eager p50 on the same device / this p50",
            "peak_mem_mb: rss_hwm = peak resident memory above the start of this backend "
            "(session, weights, buffers); torch_cuda = torch.cuda.max_memory_allocated; "
            "gpu_device = rise of used GPU memory",
        ],
    }
    for model in models:
        if model.note:
            report["notes"].append(f"{model.label}: {model.note}")
    if config.parity:
        report["parity"] = parity
    return report


def _unavailable_backends(
    backends: tuple[str, ...], torch: Any, available: list[str]
) -> dict[str, str]:
    """Backends that cannot run on this machine at all, with the reason."""
    out: dict[str, str] = {}
    for backend in backends:
        if backend in (TORCH_CPU, TORCH_CUDA) and torch is None:
            out[backend] = "torch is not installed (pip install 'mlsim-live[train]')"
        elif backend == TORCH_CUDA and not torch.cuda.is_available():
            out[backend] = "PyTorch sees no CUDA device"
        elif backend in ORT_VARIANTS:
            reason = _ort_available(backend, available) if available else "no onnxruntime"
            if reason:
                out[backend] = reason
    return out


def _bench_model_backend(
    model: BenchModel,
    backend: str,
    group: np.ndarray,
    config: BenchConfig,
    threads: int,
    torch: Any,
    available: list[str],
) -> tuple[BenchRow | None, np.ndarray | None, str]:
    """Time one model on one backend; return (row, output, reason it was skipped)."""
    if backend in (TORCH_CPU, TORCH_CUDA):
        if torch is None:
            return None, None, "torch is not installed"
        if model.torch_module is None:
            return None, None, "no PyTorch module for this model (architecture unknown)"
        if backend == TORCH_CUDA and not torch.cuda.is_available():
            return None, None, "no CUDA device for PyTorch"
        device = "cuda" if backend == TORCH_CUDA else "cpu"
        with PeakMemory() as mem, _gpu_peak(torch if device == "cuda" else None) as gpu:
            t0 = time.perf_counter()
            run = _torch_runner(model.torch_module, device, threads)
            init_s = time.perf_counter() - t0
            out = run(group)  # also the warm-up
            times = time_calls(lambda: run(group), config.repeats, config.max_time_s, warmup=0)
        model.torch_module.to("cpu")
        if device == "cuda":
            peak, kind = gpu["torch_mb"], "torch_cuda"
        else:
            peak, kind = mem.mb, mem.kind
        return (
            _row(model.label, backend, f"torch {device}", "fp32", times, init_s, peak, kind),
            out,
            "",
        )
    # ONNX Runtime
    if model.onnx_path is None:
        return None, None, "no ONNX file for this model"
    reason = _ort_available(backend, available)
    if reason:
        return None, None, reason
    from mlsim_live.engine.rcan import RCANReconstructor

    variant = ORT_VARIANTS[backend]
    on_gpu = backend != ORT_CPU
    with PeakMemory() as mem, _gpu_peak(torch if on_gpu else None) as gpu:
        t0 = time.perf_counter()
        try:
            recon = RCANReconstructor(
                model.onnx_path,
                provider=variant.provider,
                fp16=variant.fp16,
                threads=threads,
                warmup=(config.size, config.size),
                tile_size=max(1024, config.size),
            )
        except MLSimError as exc:
            return None, None, str(exc)
        init_s = time.perf_counter() - t0
        expected = {
            "cpu": "CPUExecutionProvider",
            "cuda": "CUDAExecutionProvider",
            "tensorrt": "TensorrtExecutionProvider",
        }[variant.provider]
        if recon.provider != expected:
            return None, None, f"{expected} could not start; it fell back to {recon.provider}"
        if variant.fp16 and not recon.fp16:
            return None, None, "no fp16 model could be made (needs onnx, or NAME_fp16.onnx)"
        out = recon.reconstruct(group)
        times = time_calls(
            lambda: recon.reconstruct(group), config.repeats, config.max_time_s, warmup=0
        )
    if on_gpu and gpu["device_mb"] is not None:
        peak, kind = gpu["device_mb"], "gpu_device"
    else:
        peak, kind = mem.mb, mem.kind
    return (
        _row(model.label, backend, expected, variant.precision, times, init_s, peak, kind),
        out,
        "",
    )


def _bench_wiener(
    wanted: list[str], group: np.ndarray, input_info: dict[str, Any], config: BenchConfig
) -> tuple[list[BenchRow], list[dict[str, str]]]:
    from mlsim_live.sim import Optics

    optics_dict = input_info["params"].get("optics", {})
    known = {
        k: optics_dict[k] for k in ("na", "wavelength_nm", "pixel_size_um") if k in optics_dict
    }
    optics = Optics(**known) if known else None
    try:
        runners = _wiener_runners(optics)
    except (ImportError, MLSimError) as exc:
        return [], [
            {"model": "-", "backend": b, "reason": f"Wiener unavailable: {exc}"} for b in wanted
        ]
    rows = []
    for backend in wanted:
        run, note = runners[backend]
        with PeakMemory() as mem:
            times = time_calls(lambda run=run: run(group), config.repeats, config.max_time_s)
        row = _row("wiener", backend, "numpy", "fp32/fp64", times, 0.0, mem.mb, mem.kind)
        row.note = note
        rows.append(row)
    return rows, []


def _bench_trust(
    group: np.ndarray, input_info: dict[str, Any], config: BenchConfig
) -> tuple[list[BenchRow], list[dict[str, str]]]:
    """The trust map of the group's Wiener reconstruction, with the pattern estimate and the
    camera noise reused (live use: both are measured once per acquisition)."""
    from mlsim_live.recon.wiener import WienerReconstructor
    from mlsim_live.sim import Optics
    from mlsim_live.trust import TrustMapper

    optics_dict = input_info["params"].get("optics", {})
    known = {
        k: optics_dict[k] for k in ("na", "wavelength_nm", "pixel_size_um") if k in optics_dict
    }
    try:
        wiener = WienerReconstructor(optics=Optics(**known) if known else None)
        estimate = wiener.estimate(group)
        sr = wiener.reconstruct(group)
        start = time.perf_counter()
        mapper = TrustMapper(estimate, workers=config.threads or -1)
        mapper.compute(group, sr)  # fits the camera noise, builds the plan
        init_s = time.perf_counter() - start
    except MLSimError as exc:
        return [], [{"model": "trust", "backend": TRUST, "reason": str(exc)}]
    with PeakMemory() as mem:
        times = time_calls(lambda: mapper.compute(group, sr), config.repeats, config.max_time_s)
    row = _row("trust", TRUST, "numpy", "fp32", times, init_s, mem.mb, mem.kind)
    row.note = "trust map of the Wiener reconstruction; pattern estimate and camera noise reused"
    return [row], []


def _row(
    model: str,
    backend: str,
    provider: str,
    precision: str,
    times: list[float],
    init_s: float,
    peak_mb: float | None,
    kind: str,
) -> BenchRow:
    stats = summarize_ms(times)
    return BenchRow(
        model=model,
        backend=backend,
        provider=provider,
        precision=precision,
        latency_ms=stats,
        groups_per_s=1e3 / stats["p50"] if stats["p50"] > 0 else float("inf"),
        n=len(times),
        init_s=init_s,
        peak_mem_mb=None if peak_mb is None else round(float(peak_mb), 1),
        peak_mem_kind=kind,
    )


def _add_ratios(rows: list[BenchRow]) -> None:
    by_key = {(r.model, r.backend): r for r in rows}
    for r in rows:
        ref = RATIO_REFERENCE.get(r.backend)
        base = by_key.get((r.model, ref)) if ref else None
        if base is not None and r.latency_ms["p50"] > 0:
            r.ratio_vs_torch_eager = base.latency_ms["p50"] / r.latency_ms["p50"]


def _parity(label: str, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Max abs differences of every backend's output against the first (reference) one."""
    ref_name = TORCH_CPU if TORCH_CPU in outputs else next(iter(outputs))
    ref = outputs[ref_name]
    span = float(np.abs(ref).max()) or 1.0
    diffs = {}
    for name, out in outputs.items():
        if name == ref_name:
            continue
        d = float(np.abs(out.astype(np.float64) - ref).max())
        diffs[name] = {"max_abs": d, "max_abs_rel": d / span}
    return {"model": label, "reference": ref_name, "output_max": span, "diffs": diffs}


# -- report ----------------------------------------------------------------------------------


def format_table(report: dict[str, Any]) -> str:
    """Plain aligned text: one line per result, then what was skipped and the machine."""
    header = (
        "model",
        "backend",
        "provider",
        "prec",
        "p50 ms",
        "p95 ms",
        "groups/s",
        "peak MB",
        "x eager",
        "n",
    )
    lines = []
    for r in report["results"]:
        lat = r["latency_ms"]
        ratio = r["ratio_vs_torch_eager"]
        mem = r["peak_mem_mb"]
        lines.append(
            (
                r["model"],
                r["backend"],
                r["provider"].replace("ExecutionProvider", ""),
                r["precision"],
                f"{lat['p50']:.1f}",
                f"{lat['p95']:.1f}",
                f"{r['groups_per_s']:.2f}",
                "-" if mem is None else f"{mem:.0f}",
                "-" if ratio is None else f"{ratio:.2f}",
                str(r["n"]),
            )
        )
    widths = [
        max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
        for i, h in enumerate(header)
    ]
    numeric = set(range(4, len(header)))

    def fmt(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    m = report["machine"]
    cfg = report["config"]
    out = [
        f"mlsim-live bench: {cfg['size']}x{cfg['size']} group (9 frames), "
        f"{report['date']}, {m['cpu_model']}, {m['physical_cores']} physical cores, "
        f"{cfg['threads']} threads, load {m['load_avg_1_5_15']}"
        + (f", GPU {m['gpu']}" if m.get("gpu") else ""),
        fmt(header),
        fmt(tuple("-" * w for w in widths)),
        *(fmt(line) for line in lines),
    ]
    for s in report["skipped"]:
        out.append(f"skipped {s['model']} / {s['backend']}: {s['reason']}")
    for p in report.get("parity", []):
        parts = ", ".join(
            f"{k} {v['max_abs']:.2e} ({v['max_abs_rel']:.1e} rel)" for k, v in p["diffs"].items()
        )
        out.append(f"parity {p['model']} vs {p['reference']}: {parts}")
    return "\n".join(out)
