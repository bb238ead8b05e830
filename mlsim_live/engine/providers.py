"""ONNX Runtime import, install checks, CPU core counting and execution-provider choice."""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from mlsim_live.errors import MLSimError

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

#: Short names accepted for ``provider`` besides ``"auto"`` and full EP names.
PROVIDER_ALIASES = {"cpu": CPU, "cuda": CUDA, "tensorrt": TENSORRT, "trt": TENSORRT}

#: Distributions that all install the same ``onnxruntime`` Python module.
ORT_DISTRIBUTIONS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-silicon",
    "onnxruntime-rocm",
    "onnxruntime-qnn",
    "ort-nightly",
    "ort-nightly-gpu",
)

FIX_HINT = (
    "pip uninstall -y onnxruntime onnxruntime-gpu, then pip install 'mlsim-live[cpu]' "
    "(no NVIDIA GPU) or 'mlsim-live[gpu]' (NVIDIA GPU)"
)


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-")


def installed_ort_distributions() -> list[tuple[str, str, Path]]:
    """Installed ONNX Runtime distributions as ``(name, version, site folder)``."""
    found: dict[tuple[str, Path], str] = {}
    for dist in importlib.metadata.distributions():
        name = _canonical((dist.metadata.get_all("Name") or [""])[0])
        if name in ORT_DISTRIBUTIONS:
            site = Path(str(dist.locate_file(""))).resolve()
            found[(name, site)] = dist.version
    return [(name, version, site) for (name, site), version in sorted(found.items())]


def check_single_install(dists: list[tuple[str, str, Path]] | None = None) -> None:
    """Raise `MLSimError` when two ONNX Runtime builds share one site-packages folder.

    ``onnxruntime`` and ``onnxruntime-gpu`` both install the module ``onnxruntime``: in the same
    folder their files overwrite each other (a CPU-only build that claims to be the GPU one, or
    a module that vanishes when either is uninstalled). Builds in *different* folders (a venv
    over system packages) are not broken: the first on ``sys.path`` wins, which is logged.
    """
    dists = installed_ort_distributions() if dists is None else dists
    by_site: dict[Path, list[str]] = {}
    for name, version, site in dists:
        by_site.setdefault(site, []).append(f"{name} {version}")
    for site, names in by_site.items():
        if len(names) > 1:
            raise MLSimError(
                f"{' and '.join(names)} are both installed in {site}; expected exactly one "
                f"ONNX Runtime build. Fix: {FIX_HINT}"
            )
    if len(dists) > 1:
        log.info(
            "several ONNX Runtime builds in separate folders (%s); the first on sys.path is used",
            ", ".join(f"{n} {v} in {s}" for n, v, s in dists),
        )


@functools.lru_cache(maxsize=1)
def import_onnxruntime() -> ModuleType:
    """Import ``onnxruntime`` after checking the install; raise `MLSimError` when unusable."""
    check_single_install()
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MLSimError(
            f"onnxruntime cannot be imported ({exc}); expected it installed: "
            "pip install 'mlsim-live[cpu]' (or 'mlsim-live[gpu]' on an NVIDIA GPU machine)"
        ) from exc
    if CUDA in ort.get_available_providers() and hasattr(ort, "preload_dlls"):
        # onnxruntime-gpu >= 1.21 finds the CUDA/cuDNN libraries of the pip ``nvidia-*``
        # wheels (the [cuda,cudnn] extras) only through this call; harmless when they are
        # already loaded (e.g. by torch) or installed system-wide.
        try:
            ort.preload_dlls()
        except Exception as exc:  # missing libraries show up again when a session is made
            log.debug("onnxruntime.preload_dlls failed: %s", exc)
    return ort


def available_providers() -> list[str]:
    """Execution providers of the installed ONNX Runtime build."""
    return list(import_onnxruntime().get_available_providers())


def _affinity_cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def _cgroup_cpu_limit() -> int | None:
    """CPUs allowed by a cgroup v2 quota (containers), or None when unlimited/unknown."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, int(float(quota) / float(period) + 0.5))
    except (ValueError, ZeroDivisionError):
        return None


@functools.lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical CPU cores this process may use (hyper-threads counted once).

    Reads ``/proc/cpuinfo`` (pairs of physical id and core id) restricted to the CPUs of the
    process affinity, and caps it by a cgroup CPU quota. Falls back to the number of usable
    logical CPUs where ``/proc/cpuinfo`` says nothing (macOS, Windows).
    """
    allowed = _affinity_cpus()
    cores: set[tuple[str, str]] = set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for block in text.strip().split("\n\n"):
        info: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                info[key.strip()] = value.strip()
        try:
            cpu = int(info["processor"])
        except (KeyError, ValueError):
            continue
        if cpu in allowed and "core id" in info:
            cores.add((info.get("physical id", "0"), info["core id"]))
    count = len(cores) or len(allowed) or (os.cpu_count() or 1)
    limit = _cgroup_cpu_limit()
    return max(1, min(count, limit) if limit else count)


def cpu_model_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (or ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def default_cache_dir() -> Path:
    """Folder for TensorRT engines: ``$MLSIM_LIVE_CACHE`` or ``~/.cache/mlsim-live``."""
    root = os.environ.get("MLSIM_LIVE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mlsim-live"
    )
    return Path(root)


@dataclass(frozen=True)
class ProviderPlan:
    """One way to build a session: providers with options, and whether the model is fp16.

    Attributes
    ----------
    primary : str
        The execution provider this plan is for (the one reported as ``provider``).
    providers : list
        ``(name, options)`` pairs handed to ``InferenceSession`` in priority order (later ones
        take the nodes the primary cannot run).
    fp16_model : bool
        Run a float16 copy of the model (CUDA). TensorRT builds its own fp16 engine from the
        fp32 model instead.
    fp16 : bool
        Whether the arithmetic is fp16 (fp16 model, or TensorRT fp16 engine).
    """

    primary: str
    providers: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    fp16_model: bool = False
    fp16: bool = False

    @property
    def on_gpu(self) -> bool:
        """True for CUDA and TensorRT plans."""
        return self.primary in (CUDA, TENSORRT)


def resolve_provider(provider: str) -> str:
    """Map ``"auto"``, a short name (``cpu``, ``cuda``, ``tensorrt``) or an EP name to one name."""
    key = provider.strip()
    if key.lower() == "auto":
        return "auto"
    if key.lower() in PROVIDER_ALIASES:
        return PROVIDER_ALIASES[key.lower()]
    if key in (CPU, CUDA, TENSORRT):
        return key
    raise MLSimError(
        f"unknown provider {provider!r}; expected auto, cpu, cuda, tensorrt or an ONNX Runtime "
        "execution provider name"
    )


def cuda_options(device_id: int = 0) -> dict[str, Any]:
    """CUDA EP options: exhaustive cuDNN algorithm search, growing memory arena."""
    return {
        "device_id": device_id,
        "cudnn_conv_algo_search": "EXHAUSTIVE",
        "cudnn_conv_use_max_workspace": "1",
        "arena_extend_strategy": "kNextPowerOfTwo",
        "do_copy_in_default_stream": True,
    }


def tensorrt_options(
    cache_dir: Path,
    input_name: str,
    fp16: bool,
    opt_hw: tuple[int, int],
    max_hw: tuple[int, int],
    min_hw: tuple[int, int] = (16, 16),
    device_id: int = 0,
) -> dict[str, Any]:
    """TensorRT EP options: engine and timing caches in ``cache_dir``, one shape profile."""
    cache_dir.mkdir(parents=True, exist_ok=True)

    def shape(hw: tuple[int, int]) -> str:
        return f"{input_name}:1x9x{hw[0]}x{hw[1]}"

    return {
        "device_id": device_id,
        "trt_fp16_enable": bool(fp16),
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache_dir),
        "trt_profile_min_shapes": shape(min_hw),
        "trt_profile_opt_shapes": shape(opt_hw),
        "trt_profile_max_shapes": shape(max_hw),
    }


def plan_providers(
    provider: str,
    available: list[str],
    *,
    fp16: bool | None,
    input_name: str,
    opt_hw: tuple[int, int],
    max_hw: tuple[int, int],
    cache_dir: Path | None = None,
    device_id: int = 0,
) -> list[ProviderPlan]:
    """Candidate plans in order of preference; the caller tries each until one works.

    Parameters
    ----------
    provider : str
        ``"auto"`` (TensorRT, then CUDA, then CPU, as available), or one provider; a requested
        provider that the installed build lacks is skipped with a warning (CPU remains).
    available : list of str
        ``onnxruntime.get_available_providers()``.
    fp16 : bool or None
        None: fp16 where it is the fast path (TensorRT engines), fp32 on CUDA and CPU.
        True: fp16 on TensorRT and CUDA. False: fp32 everywhere. CPU always runs fp32.
    """
    wanted = resolve_provider(provider)
    order = [TENSORRT, CUDA, CPU] if wanted == "auto" else [wanted, CPU]
    if wanted != "auto" and wanted not in available:
        log.warning(
            "execution provider %s was requested but this onnxruntime build has only %s; "
            "falling back to CPU (for a GPU: pip install 'mlsim-live[gpu]')",
            wanted,
            ", ".join(available),
        )
    cache = cache_dir or default_cache_dir() / "tensorrt"
    plans: list[ProviderPlan] = []
    for name in dict.fromkeys(order):
        if name not in available and name != CPU:
            continue
        if name == TENSORRT:
            trt_fp16 = fp16 is not False
            opts = tensorrt_options(
                cache, input_name, trt_fp16, opt_hw, max_hw, device_id=device_id
            )
            plans.append(
                ProviderPlan(
                    TENSORRT,
                    [(TENSORRT, opts), (CUDA, cuda_options(device_id)), (CPU, {})],
                    fp16_model=False,
                    fp16=trt_fp16,
                )
            )
        elif name == CUDA:
            plans.append(
                ProviderPlan(
                    CUDA,
                    [(CUDA, cuda_options(device_id)), (CPU, {})],
                    fp16_model=bool(fp16),
                    fp16=bool(fp16),
                )
            )
        else:
            plans.append(ProviderPlan(CPU, [(CPU, {})]))
    return plans


def cpu_session_options(threads: int | None = None) -> Any:
    """Session options for the CPU: all graph optimizations, physical-core threads.

    ``intra_op_num_threads`` is the number of physical cores (hyper-threads slow convolutions
    down), ``inter_op_num_threads`` 1 and sequential execution: the RCAN is one chain of
    convolutions, so parallel branches gain nothing and only add threads. The numpy work
    around a run (normalization, padding, blending) is single-threaded element-wise code that
    does not compete with ONNX Runtime's pool; no BLAS-heavy numpy runs concurrently. The pool
    does not spin-wait after a run: in a live process the acquisition, grouping and viewer
    threads need those cores between groups.
    """
    ort = import_onnxruntime()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = int(threads) if threads else physical_cores()
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3  # ORT's own warnings (e.g. unused initializers) stay quiet
    return so
