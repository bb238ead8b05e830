"""The judge's outputs: ``real_fidelity.json``, ``real_fidelity.md`` and PNG pictures."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlsim_live.judge.plot import Series, have_pillow, image_grid, line_chart
from mlsim_live.judge.results import BASELINE_METHOD, REFERENCE_METHOD, StackJudgement

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

log = logging.getLogger(__name__)

JSON_NAME = "real_fidelity.json"
MARKDOWN_NAME = "real_fidelity.md"


def picture_names(stack: str) -> dict[str, str]:
    """File names of one stack's pictures: FRC curves, ladder plot, crops."""
    return {
        "frc": f"{stack}_frc.png",
        "ladder": f"{stack}_ladder.png",
        "crops": f"{stack}_crops.png",
    }


def output_paths(out: Path, stacks: Sequence[str]) -> list[Path]:
    """Every file the report writes for these stacks."""
    paths = [out / JSON_NAME, out / MARKDOWN_NAME]
    for name in stacks:
        paths += [out / n for n in picture_names(name).values()]
    return paths


def report_dict(
    judgements: Sequence[StackJudgement],
    skipped: Sequence[tuple[str, str]] = (),
    **extra: Any,
) -> dict[str, Any]:
    """The JSON document: per stack, per method."""
    return {
        "what": "real-data fidelity judge: split-half FRC, photon ladder, beads",
        **extra,
        "stacks": {j.name: j.to_dict() for j in judgements},
        "skipped": [{"path": p, "reason": r} for p, r in skipped],
    }


def _num(v: float | None, fmt: str = ".2f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, fmt)


def _frac(f: float) -> str:
    return "1" if f == 1 else f"1/{round(1 / f)}"


def stack_markdown(j: StackJudgement) -> str:
    """One stack's section: photons, FRC, ladder and bead tables in plain words."""
    unit = "nm" if j.pixel_size_um is not None else "px"
    lines = [f"## {j.name}", ""]
    lines += _photons_section(j, unit)
    lines += _frc_section(j, unit)
    lines += _ladder_section(j)
    if any(m.beads is not None for m in j.methods):
        lines += _beads_section(j, unit)
    return "\n".join(lines) + "\n"


def _photons_section(j: StackJudgement, unit: str) -> list[str]:
    """The photon calibration, a fixed-pattern warning and the theoretical limits."""
    cal = j.calibration
    lines = [
        f"Photons (from the data's own noise): {cal.describe()}. Judged in "
        f"{j.seconds:.0f} s with seed {j.seed}."
    ]
    if cal.fixed_pattern_photons > 0.3 * math.sqrt(max(cal.background_photons, 1.0) / 18):
        lines.append(
            f"Warning: a camera fixed pattern of {cal.fixed_pattern_photons:.2g} photons rms is "
            "in both halves and every rung; it inflates the FRC (correct the data with the "
            "camera's offset map first)."
        )
    ex = j.expected
    if unit == "nm":
        lines.append(
            f"Theoretical limits: widefield 1/fc = {_num(ex.get('widefield_limit_nm'), '.0f')} nm, "
            f"SIM 1/(fc + k) = {_num(ex.get('sim_limit_nm'), '.0f')} nm "
            f"(pattern at {j.pattern_cycles_per_px / j.cutoff_cycles_per_px:.2f} of the cutoff)."
        )
    return lines


def _frc_section(j: StackJudgement, unit: str) -> list[str]:
    lines = ["", "### Split-half FRC", ""]
    lines.append(
        "Each frame's photons split at random into two halves, each reconstructed on its own; "
        "the resolution is where the Fourier ring correlation of the two reconstructions falls "
        f"below 1/7 ({unit}; smaller is finer). Structure made from noise differs between the "
        "halves and lowers it; structure a method draws the same way whatever the noise does "
        "not."
    )
    lines += ["", f"| method | FRC resolution ({unit}) | note |", "|---|---|---|"]
    for m in j.methods:
        value = m.frc.frc_resolution_nm if unit == "nm" else m.frc.frc_resolution_px
        note = ""
        if m.frc.limited_by_sampling:
            note = (
                "never falls below 1/7: the halves agree up to the grid's Nyquist frequency "
                "(a fixed texture, or resolution at the sampling limit; see beads and ladder)"
            )
        if m.fallback:
            doses = ", ".join(
                "the FRC halves" if d == "halves" else f"dose 1/{round(1 / float(d))}"
                for d in dict.fromkeys(m.fallback)
            )
            note = f"{note}; " if note else ""
            note += f"fell back to its fallback method at {doses}"
        lines.append(f"| {m.method} | {_num(value, '.0f')} | {note} |")
    return lines


def _ladder_section(j: StackJudgement) -> list[str]:
    lines = ["", "### Photon ladder", ""]
    lowest = round(1 / j.methods[0].ladder[-1].dose_fraction)
    lines.append(
        f"Photons thinned binomially to 1/2 ... 1/{lowest} "
        f"of the dose; every rung reconstructed by every method and compared with the "
        f"{REFERENCE_METHOD} reconstruction of the full dose. Cell: PSNR dB / SSIM / "
        "correlation / correlation beyond the widefield cutoff. (!) marks a reconstruction "
        f"that correlates less with the reference than {BASELINE_METHOD} does at that rung. "
        "The reference is Wiener's, so Wiener agrees with it best by construction."
    )
    names = [m.method for m in j.methods]
    lines += ["", "| dose | peak photons | " + " | ".join(names) + " |"]
    lines.append("|---|---|" + "---|" * len(names))
    for i, score0 in enumerate(j.methods[0].ladder):
        cells = []
        for m in j.methods:
            s = m.ladder[i]
            if m.method == REFERENCE_METHOD and s.dose_fraction == 1.0:
                cells.append("reference")
                continue
            flag = " (!)" if s.below_widefield else ""
            cells.append(
                f"{_num(s.psnr_db)} / {_num(s.ssim, '.3f')} / {_num(s.correlation, '.3f')} / "
                f"{_num(s.beyond_cutoff_correlation)}{flag}"
            )
        lines.append(
            f"| {_frac(score0.dose_fraction)} | {score0.peak_photons:.3g} | "
            + " | ".join(cells)
            + " |"
        )
    return lines


def _beads_section(j: StackJudgement, unit: str) -> list[str]:
    lines = ["", "### Beads", ""]
    lines.append(
        "Beads found in each full-dose reconstruction (local maxima above 15 % of the "
        f"bright beads), against {REFERENCE_METHOD}'s count; isolated beads (chosen on "
        f"{REFERENCE_METHOD}) fitted with 2D Gaussians in every reconstruction: median FWHM "
        f"and quartiles ({unit})."
    )
    ex = j.expected
    if unit == "nm":
        lines.append(
            f"Expected for {_num(ex.get('bead_diameter_nm'), '.0f')} nm beads through ideal "
            f"optics: widefield {_num(ex.get('bead_fwhm_widefield_nm'), '.0f')} nm, SIM "
            f"{_num(ex.get('bead_fwhm_sim_nm'), '.0f')} nm."
        )
    ref = j.method(REFERENCE_METHOD).beads
    lines += [
        "",
        f"| method | beads found | vs {REFERENCE_METHOD} | fitted | median FWHM ({unit}) "
        "| quartiles |",
        "|---|---|---|---|---|---|",
    ]
    for m in j.methods:
        b = m.beads
        if b is None:
            continue
        q1, q3 = b.fwhm_quartiles_px
        scale = 1.0 if unit == "px" else (b.pixel_size_um or 0.0) * 1e3
        ratio = b.n_beads / ref.n_beads if ref is not None and ref.n_beads else float("nan")
        lines.append(
            f"| {m.method} | {b.n_beads} | {_num(ratio)} | {b.n_fitted} | "
            f"{_num(b.fwhm_median_px * scale, '.0f')} | "
            f"{_num(q1 * scale, '.0f')}-{_num(q3 * scale, '.0f')} |"
        )
    return lines


def report_markdown(
    judgements: Sequence[StackJudgement], skipped: Sequence[tuple[str, str]] = ()
) -> str:
    """The whole Markdown report."""
    parts = [
        "# Real-data fidelity",
        "",
        "No ground truth exists for real data, so the judge uses what the field uses instead: "
        "photon statistics from the data itself, split-half FRC (reproducibility against the "
        "noise), a photon ladder (how each method's picture holds up as the dose falls, "
        "against the full-dose Wiener picture) and, on beads, the size and number of beads.",
        "",
    ]
    parts += [stack_markdown(j) for j in judgements]
    if skipped:
        parts += ["## Not judged", ""] + [f"- {p}: {r}" for p, r in skipped] + [""]
    return "\n".join(parts)


def frc_picture(j: StackJudgement) -> Image.Image:
    """FRC curves of every method, with the 1/7 threshold."""
    nm = j.sr_pixel_size_um is not None
    series = []
    for m in j.methods:
        x = m.frc.frequency_per_um if nm else m.frc.frequency_cycles_per_px
        series.append(Series(m.method, list(x or ()), list(m.frc.frc)))
    return line_chart(
        series,
        f"{j.name}: split-half FRC (dashed: 1/7)",
        "spatial frequency (1/um)" if nm else "spatial frequency (cycles/pixel)",
        "FRC",
        hline=1.0 / 7.0,
        ylim=(-0.2, 1.05),
    )


def ladder_picture(j: StackJudgement) -> Image.Image:
    """Ladder plots side by side: PSNR and beyond-cutoff correlation against the dose."""
    from PIL import Image

    psnr = [
        Series(m.method, [s.dose_fraction for s in m.ladder], [s.psnr_db for s in m.ladder])
        for m in j.methods
    ]
    corr = [
        Series(
            m.method,
            [s.dose_fraction for s in m.ladder],
            [s.beyond_cutoff_correlation for s in m.ladder],
        )
        for m in j.methods
    ]
    left = line_chart(psnr, f"{j.name}: PSNR vs full-dose Wiener", "dose", "PSNR dB", log2_x=True)
    right = line_chart(
        corr,
        "correlation beyond the widefield cutoff",
        "dose",
        "corr.",
        log2_x=True,
        ylim=(-0.1, 1.0),
    )
    out = Image.new("RGB", (left.width + right.width, max(left.height, right.height)), "white")
    out.paste(left, (0, 0))
    out.paste(right, (left.width, 0))
    return out


def crops_picture(j: StackJudgement) -> Image.Image:
    """Centre crops of every method (columns) at three rungs (rows)."""
    fractions = sorted(next(iter(j.crops.values())).keys(), reverse=True)
    rows = [(f"dose {_frac(f)}", [(m, j.crops[m][f]) for m in j.crops]) for f in fractions]
    return image_grid(rows)


def write_report(
    out: Path,
    judgements: Sequence[StackJudgement],
    *,
    skipped: Sequence[tuple[str, str]] = (),
    overwrite: bool = False,
    **extra: Any,
) -> list[Path]:
    """Write the JSON, the Markdown and the PNGs atomically; return the paths written."""
    from mlsim_live.io import atomic_path, write_json_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [
        write_json_atomic(
            out / JSON_NAME, report_dict(judgements, skipped, **extra), overwrite=overwrite
        )
    ]
    with atomic_path(out / MARKDOWN_NAME, overwrite=overwrite) as tmp:
        tmp.write_text(report_markdown(judgements, skipped), encoding="utf-8")
    written.append(out / MARKDOWN_NAME)
    if not have_pillow():
        log.warning("Pillow is not installed: no PNG pictures (pip install pillow)")
        judgements = ()
    for j in judgements:
        names = picture_names(j.name)
        for key, draw in (
            ("frc", frc_picture),
            ("ladder", ladder_picture),
            ("crops", crops_picture),
        ):
            path = out / names[key]
            with atomic_path(path, overwrite=overwrite) as tmp:
                draw(j).save(tmp, format="PNG")
            written.append(path)
    log.info("wrote %d files to %s", len(written), out)
    return written
