"""A training run's CSV logs and its PNG plot of loss and validation metrics (Pillow only)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from mlsim_live.model.checkpoints import _atomic_write_bytes, atomic_write_text


def _read_csv(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]


def _write_csv(path: Path, rows: list[dict[str, float]]) -> None:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    lines = [",".join(keys)]
    for row in rows:
        lines.append(",".join(_fmt(row.get(k)) for k in keys))
    atomic_write_text(path, "\n".join(lines) + "\n")


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def plot_training(
    train_rows: list[dict[str, float]], val_rows: list[dict[str, float]], path: Path
) -> None:
    """Draw loss (log scale) and validation PSNR/SSIM against step into a PNG (PIL only)."""
    from PIL import Image, ImageDraw

    width, height, pad = 900, 640, 60
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    panels = [
        (pad, 30, width - 30, height // 2 - 30),
        (pad, height // 2 + 30, width - 60, height - 40),
    ]
    steps_max = max([1.0] + [r["step"] for r in train_rows + val_rows])

    def axes(box: tuple[int, int, int, int], title: str) -> None:
        x0, y0, x1, y1 = box
        draw.rectangle(box, outline="black")
        draw.text((x0, y0 - 16), title, fill="black")
        draw.text((x1 - 60, y1 + 4), f"step {int(steps_max)}", fill="black")
        draw.text((x0, y1 + 4), "0", fill="black")

    def line(
        box: tuple[int, int, int, int],
        xs: list[float],
        ys: list[float],
        color: str,
        lo: float,
        hi: float,
    ) -> None:
        x0, y0, x1, y1 = box
        if hi <= lo:
            hi = lo + 1.0
        pts = [
            (x0 + (x1 - x0) * x / steps_max, y1 - (y1 - y0) * (y - lo) / (hi - lo))
            for x, y in zip(xs, ys)
            if math.isfinite(y)
        ]
        if len(pts) > 1:
            draw.line(pts, fill=color, width=2)
        elif pts:
            px, py = pts[0]
            draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=color)

    # loss panel
    box = panels[0]
    axes(box, "training loss (log scale)")
    losses = [(r["step"], r["loss"]) for r in train_rows if r.get("loss", 0) > 0]
    if losses:
        logs = [math.log10(v) for _, v in losses]
        lo, hi = min(logs), max(logs)
        line(box, [s for s, _ in losses], logs, "#1f77b4", lo, hi)
        draw.text((box[0] - 55, box[1]), f"{10**hi:.3g}", fill="black")
        draw.text((box[0] - 55, box[3] - 12), f"{10**lo:.3g}", fill="black")
    # validation panel: PSNR (left axis) and SSIM (right axis)
    box = panels[1]
    axes(box, "validation: PSNR dB (blue, left), SSIM (red, right)")
    if val_rows:
        steps = [r["step"] for r in val_rows]
        p = [r["val_psnr"] for r in val_rows]
        s = [r["val_ssim"] for r in val_rows]
        plo, phi = min(p) - 0.5, max(p) + 0.5
        slo, shi = min(s) - 0.02, max(s) + 0.02
        line(box, steps, p, "#1f77b4", plo, phi)
        line(box, steps, s, "#d62728", slo, shi)
        draw.text((box[0] - 55, box[1]), f"{phi:.1f}", fill="#1f77b4")
        draw.text((box[0] - 55, box[3] - 12), f"{plo:.1f}", fill="#1f77b4")
        draw.text((box[2] + 4, box[1]), f"{shi:.3f}", fill="#d62728")
        draw.text((box[2] + 4, box[3] - 12), f"{slo:.3f}", fill="#d62728")
    _atomic_write_bytes(path, lambda fh: img.save(fh, format="PNG"))
