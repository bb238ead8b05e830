"""An ONNX Runtime session for one RCAN model: checks, provider fallback, I/O binding on GPU."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
from pathlib import Path
from typing import Any

import numpy as np

from mlsim_live.constants import GROUP_SIZE
from mlsim_live.engine import providers as prov
from mlsim_live.errors import MLSimError, one_line

log = logging.getLogger(__name__)

#: Input channels of a model that takes the raw group alone.
GROUP_CHANNELS = GROUP_SIZE
FP16_SUFFIX = "_fp16"

# Exception class names of onnxruntime that mean "this file is not a usable model" (as opposed
# to "this execution provider could not start").
_MODEL_ERRORS = ("InvalidProtobuf", "InvalidGraph", "NoModel", "InvalidArgument", "NotImplemented")


def check_model_file(path: Path) -> Path:
    """Return ``path`` resolved; raise `MLSimError` when it is missing, a folder or empty."""
    path = Path(path).expanduser()
    if not path.exists():
        raise MLSimError(f"model file {path} does not exist; expected an ONNX model (.onnx)")
    if path.is_dir():
        raise MLSimError(f"model path {path} is a folder; expected an ONNX model file (.onnx)")
    if path.stat().st_size == 0:
        raise MLSimError(f"model file {path} is empty; expected an ONNX model (.onnx)")
    return path.resolve()


def _is_model_error(exc: BaseException) -> bool:
    return type(exc).__name__ in _MODEL_ERRORS or "Protobuf parsing failed" in str(exc)


def _tensorrt_loadable() -> bool:
    """True when TensorRT's runtime library can be loaded (ORT's TensorRT EP needs it)."""
    with contextlib.suppress(ImportError):  # the pip ``tensorrt`` wheels put it here
        import tensorrt_libs  # noqa: F401

        return True
    names = [ctypes.util.find_library("nvinfer")] + [f"libnvinfer.so.{v}" for v in (10, 9, 8)]
    for name in names:
        if not name:
            continue
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return True
    return False


def fp16_model(path: Path) -> tuple[str | bytes, str] | None:
    """A float16 copy of the model: a sibling ``<stem>_fp16.onnx``, or converted in memory.

    Returns ``(path or serialized model, description)``, or None when neither is possible
    (no sibling file and the ``onnx`` package is not installed).
    """
    sibling = path.with_name(path.stem + FP16_SUFFIX + path.suffix)
    if path.stem.endswith(FP16_SUFFIX):
        return str(path), path.name
    if sibling.is_file():
        return str(sibling), sibling.name
    try:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:
        log.warning(
            "no %s beside the model and %s, so fp16 is unavailable; "
            "make one with `mlsim-live export --fp16` or pip install onnx",
            sibling.name,
            exc,
        )
        return None
    model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    return model.SerializeToString(), f"{path.name} converted to fp16"


# Input element types an RCAN model may take (the engine feeds float32, or float16 to fp16 models).
_INPUT_TYPES = ("tensor(float)", "tensor(float16)")


def check_model_input(name: str, input_type: str, shape: list[Any]) -> None:
    """Raise `MLSimError` unless a model takes float frames of any height and width.

    The engine feeds ``(N, C, H, W)`` float32 (or float16) groups of the camera's frame size,
    so a model with another element type, or exported with a fixed height and width, cannot
    run; this says so when the model loads instead of failing on the first group.
    """
    if input_type not in _INPUT_TYPES:
        raise MLSimError(
            f"model {name} takes {input_type} input; expected float32 or float16 frames "
            "(tensor(float) or tensor(float16))"
        )
    fixed = [d for d in shape[2:] if isinstance(d, int)]
    if fixed:
        size = " x ".join(str(d) if isinstance(d, int) else "?" for d in shape[2:])
        raise MLSimError(
            f"model {name} takes frames of a fixed size ({size}); expected a model exported "
            "with dynamic height and width (any frame size)"
        )


class OnnxSession:
    """An ``InferenceSession`` of an RCAN model on the best working execution provider.

    Parameters
    ----------
    path : Path
        The ONNX model: one input ``(N, 9, H, W)``, one output ``(N, C, s*H, s*W)``.
    provider : str
        ``"auto"`` (TensorRT, then CUDA, then CPU), ``"cpu"``, ``"cuda"``, ``"tensorrt"``, or
        an execution provider name.
    fp16 : bool or None
        See `mlsim_live.engine.providers.plan_providers`.
    threads : int, optional
        CPU threads (``intra_op_num_threads``); default: physical cores.
    opt_hw, max_hw : tuple of int
        Typical and largest input ``(H, W)`` (TensorRT shape profile).
    cache_dir : Path, optional
        TensorRT engine cache; default ``~/.cache/mlsim-live/tensorrt``.

    Attributes
    ----------
    provider : str
        The execution provider that runs the model's first node (e.g. ``CPUExecutionProvider``).
    fp16 : bool
        True when the arithmetic is fp16.
    input_name, output_name : str
    in_channels : int or None
        From the model's input shape (None when the dimension is symbolic).
    """

    def __init__(
        self,
        path: Path,
        provider: str = "auto",
        fp16: bool | None = None,
        threads: int | None = None,
        opt_hw: tuple[int, int] = (512, 512),
        max_hw: tuple[int, int] = (1024, 1024),
        cache_dir: Path | None = None,
        device_id: int = 0,
        channels: int = GROUP_CHANNELS,
    ) -> None:
        self.path = check_model_file(path)
        self.expected_channels = int(channels)
        self._ort = prov.import_onnxruntime()
        self.device_id = device_id
        self.scale: int | None = None
        self._binding: Any = None
        self._bound_shape: tuple[int, ...] | None = None
        plans = self._plan_providers(provider, fp16, threads, opt_hw, max_hw, cache_dir)
        self.session, self.plan, self.model_description = self._first_working(
            plans, threads, explicit=prov.resolve_provider(provider) != "auto"
        )
        self.provider = self.plan.primary
        self.fp16 = self.plan.fp16
        self._read_signature()
        # where the I/O-bound buffers live: on the GPU for CUDA and TensorRT, else no binding
        self.bind_device: str | None = "cuda" if self.plan.on_gpu else None

    # -- construction -------------------------------------------------------------------------

    def _plan_providers(
        self,
        provider: str,
        fp16: bool | None,
        threads: int | None,
        opt_hw: tuple[int, int],
        max_hw: tuple[int, int],
        cache_dir: Path | None,
    ) -> list[prov.ProviderPlan]:
        """The execution providers to try, best first (see `OnnxSession`'s parameters)."""
        available = prov.available_providers()
        # The input name is needed for TensorRT's shape profile; read it from a CPU session
        # only when TensorRT is in play (the CPU session also validates the model early).
        input_name = "input"
        if prov.TENSORRT in available and prov.resolve_provider(provider) in (
            "auto",
            prov.TENSORRT,
        ):
            input_name = (
                self._create(str(self.path), [(prov.CPU, {})], threads).get_inputs()[0].name
            )
            if provider == "auto" and not _tensorrt_loadable():
                log.debug("TensorRT libraries not found; skipping the TensorRT provider")
                available = [p for p in available if p != prov.TENSORRT]
        return prov.plan_providers(
            provider,
            available,
            fp16=fp16,
            input_name=input_name,
            opt_hw=opt_hw,
            max_hw=max_hw,
            cache_dir=cache_dir,
            device_id=self.device_id,
        )

    def _read_signature(self) -> None:
        """Check the session's inputs and outputs and keep their names, channels, static
        sizes and dtypes."""
        inp = self.session.get_inputs()
        out = self.session.get_outputs()
        if len(inp) != 1 or len(out) < 1:
            raise MLSimError(
                f"model {self.path.name} has {len(inp)} inputs and {len(out)} outputs; "
                "expected 1 input (N, 9, H, W) and 1 output"
            )
        self.input_name = inp[0].name
        self.output_name = out[0].name
        shape = list(inp[0].shape)
        if len(shape) != 4:
            raise MLSimError(
                f"model {self.path.name} takes a rank-{len(shape)} input {shape}; "
                "expected rank 4 (N, 9, H, W)"
            )
        check_model_input(self.path.name, inp[0].type, shape)
        self.in_channels = shape[1] if isinstance(shape[1], int) else None
        self._check_channels()
        out_shape = list(out[0].shape)
        self.out_channels = (
            out_shape[1] if len(out_shape) == 4 and isinstance(out_shape[1], int) else None
        )
        self.static_hw = tuple(shape[2:]) if all(isinstance(d, int) for d in shape[2:]) else None
        self.static_out_hw = (
            tuple(out_shape[2:])
            if len(out_shape) == 4 and all(isinstance(d, int) for d in out_shape[2:])
            else None
        )
        self._in_dtype = np.float16 if "float16" in inp[0].type else np.float32
        self._out_dtype = np.float16 if "float16" in out[0].type else np.float32

    def _check_channels(self) -> None:
        """Refuse a model whose fixed input channels are not the ones expected."""
        if self.in_channels is None or self.in_channels == self.expected_channels:
            return
        what = (
            "one SIM group of 3 angles x 3 phases"
            if self.expected_channels == GROUP_CHANNELS
            else "a SIM group and its 4-channel Wiener prior"
        )
        raise MLSimError(
            f"model {self.path.name} takes {self.in_channels} input channels; expected "
            f"{self.expected_channels} ({what})"
        )

    def _create(
        self, model: str | bytes, providers: list[tuple[str, dict[str, Any]]], threads: int | None
    ) -> Any:
        so = prov.cpu_session_options(threads)
        names = [name for name, _ in providers]
        options = [opts for _, opts in providers]
        try:
            return self._ort.InferenceSession(
                model, sess_options=so, providers=names, provider_options=options
            )
        except Exception as exc:
            if _is_model_error(exc) or names == [prov.CPU]:
                raise MLSimError(
                    f"model file {self.path} could not be loaded ({one_line(exc)}); expected "
                    "an ONNX model exported by `mlsim-live export`"
                ) from exc
            raise

    def _first_working(
        self, plans: list[prov.ProviderPlan], threads: int | None, explicit: bool
    ) -> tuple[Any, prov.ProviderPlan, str]:
        last_error = ""
        for plan in plans:
            model: str | bytes = str(self.path)
            description = self.path.name
            if plan.fp16_model:
                converted = fp16_model(self.path)
                if converted is None:
                    plan = prov.ProviderPlan(plan.primary, plan.providers, False, False)
                else:
                    model, description = converted
            try:
                session = self._create(model, plan.providers, threads)
            except MLSimError:
                raise
            except Exception as exc:
                last_error = one_line(exc)
                level = logging.WARNING if plan.primary == prov.CUDA or explicit else logging.INFO
                log.log(
                    level,
                    "%s could not start (%s); trying the next provider",
                    plan.primary,
                    last_error,
                )
                continue
            actual = session.get_providers()
            if actual and actual[0] == plan.primary:
                level = logging.INFO
                log.log(
                    level,
                    "ONNX Runtime provider: %s%s (model %s)",
                    plan.primary,
                    " fp16" if plan.fp16 else "",
                    description,
                )
                return session, plan, description
            level = logging.WARNING if plan.primary == prov.CUDA or explicit else logging.INFO
            log.log(
                level,
                "%s is not usable here (the session got %s; missing CUDA, cuDNN or "
                "TensorRT libraries?); falling back",
                plan.primary,
                ", ".join(actual),
            )
        raise MLSimError(
            f"no execution provider could run {self.path.name} ({last_error}); "
            "expected at least CPUExecutionProvider to work"
        )

    # -- running ------------------------------------------------------------------------------

    @property
    def on_gpu(self) -> bool:
        """True when the model runs on CUDA or TensorRT (inputs go through I/O binding)."""
        return self.plan.on_gpu

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run one batch ``(N, 9, H, W)`` float32; return ``(N, C, s*H, s*W)`` float32."""
        x = np.ascontiguousarray(x, dtype=self._in_dtype)
        if self.bind_device is not None and self.scale is not None:
            out = self._run_bound(x)
        else:
            out = self.session.run([self.output_name], {self.input_name: x})[0]
        return np.asarray(out, dtype=np.float32)

    def _run_bound(self, x: np.ndarray) -> np.ndarray:
        """GPU run with device buffers kept between calls: one H2D and one D2H copy."""
        if self._bound_shape != x.shape:
            ortvalue = self._ort.OrtValue
            n, _, h, w = x.shape
            channels = self.out_channels or 1
            s = int(self.scale or 1)
            self._in_value = ortvalue.ortvalue_from_shape_and_type(
                list(x.shape), self._in_dtype, self.bind_device, self.device_id
            )
            self._out_value = ortvalue.ortvalue_from_shape_and_type(
                [n, channels, s * h, s * w], self._out_dtype, self.bind_device, self.device_id
            )
            binding = self.session.io_binding()
            binding.bind_ortvalue_input(self.input_name, self._in_value)
            binding.bind_ortvalue_output(self.output_name, self._out_value)
            self._binding = binding
            self._bound_shape = x.shape
            log.debug("allocated %s buffers for input %s", self.bind_device, x.shape)
        self._in_value.update_inplace(x)  # host -> device
        self.session.run_with_iobinding(self._binding)
        return self._out_value.numpy()  # device -> host

    def probe_scale(self) -> int:
        """Output pixels per input pixel, from static shapes or one small run."""
        if self.static_hw and self.static_out_hw:
            ratio = self.static_out_hw[0] / self.static_hw[0]
        else:
            x = np.zeros((1, self.expected_channels, 16, 16), dtype=self._in_dtype)
            out = self.session.run([self.output_name], {self.input_name: x})[0]
            if out.ndim != 4:
                raise MLSimError(
                    f"model {self.path.name} returns a rank-{out.ndim} output; expected rank 4"
                )
            if self.out_channels is None:
                self.out_channels = int(out.shape[1])
            ratio = out.shape[2] / 16
        scale = round(ratio)
        if scale < 1 or abs(ratio - scale) > 1e-6:
            raise MLSimError(
                f"model {self.path.name} maps 16 input pixels to {ratio * 16:g} output pixels; "
                "expected an integer scale (1 or 2)"
            )
        return int(scale)
