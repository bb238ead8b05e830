"""Judge a model against widefield and Wiener on a held-out simulated set, and draw the pictures.

The held-out set spans the photon range level by level, with physics drawn over the realistic
ranges and a seed that training never uses. For every group and method it records PSNR and SSIM
against the ground truth, the correlation with the ground truth beyond the widefield cutoff (real
super-resolution, not sharpening) and the level in the ground truth's empty background (invented
texture). Pictures put widefield | Wiener | RCAN | ground truth side by side.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mlsim_live.metrics import background_level, band_correlation, psnr, ssim
from mlsim_live.recon.base import Reconstructor
from mlsim_live.sim import SAMPLE_KINDS, Optics, SimGroup, random_params, simulate_group

log = logging.getLogger(__name__)

# a seed root training never draws from (training seeds SeedSequence([seed, stream, worker]))
HELD_OUT_SEED = 7_000_001
PHOTON_LEVELS = (10.0, 30.0, 100.0, 300.0, 1000.0, 5000.0)


@dataclass(frozen=True)
class Scores:
    """Figures for one reconstruction of one group."""

    psnr_db: float
    ssim: float
    beyond_cutoff_corr: float
    background: float


def held_out_set(
    groups_per_level: int = 8,
    size: int = 128,
    photon_levels: Sequence[float] = PHOTON_LEVELS,
    seed: int = HELD_OUT_SEED,
) -> list[tuple[float, SimGroup]]:
    """Simulate the held-out groups: random physics, sample kinds in turn, fixed photon levels."""
    rng = np.random.default_rng(seed)
    out = []
    for level in photon_levels:
        for i in range(groups_per_level):
            params = random_params(rng)
            params = replace(params, signal=replace(params.signal, peak_photons=float(level)))
            kind = SAMPLE_KINDS[i % len(SAMPLE_KINDS)]
            out.append((float(level), simulate_group(params, kind, size, int(rng.integers(2**31)))))
    return out


def score(img: np.ndarray, group: SimGroup) -> Scores:
    """All figures of one reconstruction against the group's ground truth."""
    optics = group.params.optics
    fc = optics.cutoff_per_um
    k = group.pattern_frequency_per_um
    return Scores(
        psnr_db=psnr(img, group.gt),
        ssim=ssim(img, group.gt),
        beyond_cutoff_corr=band_correlation(
            img, group.gt, optics.pixel_size_um / 2, 1.05 * fc, fc + 0.9 * k
        ),
        background=background_level(img, group.gt),
    )


def evaluate(
    methods: dict[str, Callable[[SimGroup], Reconstructor]],
    groups: list[tuple[float, SimGroup]],
    progress: bool = True,
) -> dict[str, Any]:
    """Score each method on each group; return per-level means and per-group rows.

    Parameters
    ----------
    methods : dict
        Name -> factory that returns the reconstructor for a group (Wiener gets the group's true
        optics, as a fairSIM user enters their microscope's).
    groups : list of (photon level, SimGroup)
    """
    from tqdm import tqdm

    rows = []
    for level, group in tqdm(groups, desc="evaluate", unit="group", disable=not progress):
        for name, factory in methods.items():
            img = factory(group).reconstruct(group.raw)
            rows.append({"photons": level, "method": name, **score(img, group).__dict__})
    table: dict[str, dict[str, dict[str, float]]] = {}
    for level in sorted({r["photons"] for r in rows}):
        table[f"{level:g}"] = {}
        for name in methods:
            sel = [r for r in rows if r["photons"] == level and r["method"] == name]
            table[f"{level:g}"][name] = {
                key: float(np.nanmean([r[key] for r in sel]))
                for key in ("psnr_db", "ssim", "beyond_cutoff_corr", "background")
            }
    return {"per_level": table, "rows": rows, "n_groups": len(groups)}


def markdown_table(result: dict[str, Any]) -> str:
    """The per-level table in Markdown: PSNR / SSIM / beyond-cutoff corr. / background."""
    per_level = result["per_level"]
    methods = list(next(iter(per_level.values())))
    head = "| photons | " + " | ".join(methods) + " |"
    sep = "|---|" + "---|" * len(methods)
    lines = [head, sep]
    for level, by_method in per_level.items():
        cells = [
            f"{m['psnr_db']:.2f} / {m['ssim']:.3f} / {m['beyond_cutoff_corr']:.2f} / "
            f"{m['background']:.3f}"
            for m in by_method.values()
        ]
        lines.append(f"| {level} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _to_u8(img: np.ndarray, lo: float = 0.1, hi: float = 99.9) -> np.ndarray:
    a, b = np.percentile(img, [lo, hi])
    return (np.clip((img - a) / (b - a + 1e-12), 0, 1) * 255).astype(np.uint8)


def panel(images: dict[str, np.ndarray], path: Path, zoom: int = 1) -> Path:
    """Save labelled images side by side as a PNG (each scaled to its own 0.1-99.9 %)."""
    from PIL import Image, ImageDraw

    tiles = []
    for label, img in images.items():
        tile = Image.fromarray(_to_u8(np.asarray(img, dtype=np.float64)))
        if zoom > 1:
            tile = tile.resize((tile.width * zoom, tile.height * zoom), Image.Resampling.NEAREST)
        draw = ImageDraw.Draw(tile)
        draw.rectangle([0, 0, 8 + 7 * len(label), 14], fill=0)
        draw.text((3, 1), label, fill=255)
        tiles.append(tile)
    gap = 4
    out = Image.new(
        "L",
        (sum(t.width for t in tiles) + gap * (len(tiles) - 1), max(t.height for t in tiles)),
        128,
    )
    x = 0
    for t in tiles:
        out.paste(t, (x, 0))
        x += t.width + gap
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path)
    return path


def upsample2(img: np.ndarray) -> np.ndarray:
    """Nearest-neighbour 2x, only for display of camera-grid images beside 2x images."""
    return np.kron(np.asarray(img, dtype=np.float64), np.ones((2, 2)))


def _optics_from_sidecar(meta: dict[str, Any]) -> Optics | None:
    """Optics from a real stack's JSON description (emission, detection NA, pixel size)."""
    na = meta.get("na") or meta.get("na_detection")
    pixel = meta.get("pixel_size_um")
    wavelength = meta.get("emission_nm")
    if wavelength is None and meta.get("excitation_nm"):
        wavelength = float(meta["excitation_nm"]) + 30.0  # typical Stokes shift
    if not (na and pixel and wavelength):
        return None
    return Optics(na=float(na), wavelength_nm=float(wavelength), pixel_size_um=float(pixel))


def _centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape
    y, x = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return img[y : y + size, x : x + size]


def run_evaluation(
    out: Path,
    model: Path | None = None,
    groups_per_level: int = 8,
    size: int = 128,
    real_dir: Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate widefield, Wiener and the RCAN model; write JSON, Markdown and PNG panels."""
    import json

    from mlsim_live.io import atomic_path, read_raw_stack, write_json_atomic
    from mlsim_live.io.atomic import check_writable
    from mlsim_live.recon import make_reconstructor

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_writable(out / "evaluation.json", overwrite)
    rcan = make_reconstructor("rcan", model=model)
    widefield = make_reconstructor("widefield")
    methods: dict[str, Callable[[SimGroup], Reconstructor]] = {
        "widefield": lambda g: widefield,
        "wiener": lambda g: make_reconstructor("wiener", optics=g.params.optics),
        "rcan": lambda g: rcan,
    }
    groups = held_out_set(groups_per_level=groups_per_level, size=size)
    result = evaluate(methods, groups, progress=progress)
    result["model"] = rcan.name
    result["held_out_seed"] = HELD_OUT_SEED
    result["size"] = size
    result["markdown"] = markdown_table(result)

    pictures = []
    for level in PHOTON_LEVELS:
        level_groups = [g for lvl, g in groups if lvl == level]
        group = level_groups[0]  # filaments: the kind a network most likes to invent
        images = {
            "widefield": upsample2(group.raw.astype(np.float64).mean(axis=0)),
            "wiener": methods["wiener"](group).reconstruct(group.raw),
            "rcan": rcan.reconstruct(group.raw),
            "ground truth": group.gt,
        }
        pictures.append(str(panel(images, out / f"sim_{level:g}_photons.png", zoom=2)))
    if real_dir is not None:
        for tif in sorted(Path(real_dir).glob("*.tif")):
            sidecar = tif.with_suffix(".json")
            meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
            optics = _optics_from_sidecar(meta)
            with read_raw_stack(tif) as stack:
                raw = np.asarray(stack.group(0))
            crop = min(256, 2 * min(raw.shape[-2:]))
            images = {
                "widefield": upsample2(raw.astype(np.float64).mean(axis=0)),
                "wiener": make_reconstructor("wiener", optics=optics).reconstruct(raw),
                "rcan": rcan.reconstruct(raw),
            }
            images = {k: _centre_crop(v, crop) for k, v in images.items()}
            pictures.append(str(panel(images, out / f"real_{tif.stem}.png", zoom=2)))
    result["pictures"] = pictures
    write_json_atomic(out / "evaluation.json", result, overwrite=overwrite)
    with atomic_path(out / "evaluation.md", overwrite=overwrite) as tmp:
        tmp.write_text(result["markdown"] + "\n")
    return result
