"""The benchmark's input group and the models it times (shipped files, presets)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mlsim_live.bench.config import BenchModel
from mlsim_live.errors import MLSimError

log = logging.getLogger(__name__)


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
                from mlsim_live.constants import DEFAULT_LEARNED_METHOD
                from mlsim_live.paths import default_model_path

                try:
                    path = default_model_path(DEFAULT_LEARNED_METHOD)
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
            prior_fed = isinstance(arch, dict) and arch.get("prior", "none") != "none"
            if prior_fed:
                note = (
                    "prior-fed: ONNX rows time the whole method (Wiener prior included); "
                    "no PyTorch rows"
                )
            elif torch is not None and arch is not None:
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
        # a preset name: random weights, exported to a temporary ONNX file (which needs torch
        # even when no PyTorch row is asked for)
        if torch is None:
            torch = _import_torch()
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
        onnx_file = tmpdir / f"{name}_random.onnx"
        onnx_path: Path | None = onnx_file
        try:
            export_random_onnx(module, onnx_file)
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
