"""Small PNG charts and image grids drawn with Pillow (the project has no plotting library).

Pillow is imported when a picture is drawn, so the judge's figures work without it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image, ImageDraw, ImageFont

#: Line colours, one per method (widefield grey, Wiener blue, then the learned methods).
PALETTE = (
    (110, 110, 110),
    (31, 119, 180),
    (214, 39, 40),
    (44, 160, 44),
    (148, 103, 189),
    (255, 127, 14),
    (23, 190, 207),
)


@dataclass(frozen=True)
class Series:
    """One line of a chart."""

    label: str
    x: Sequence[float]
    y: Sequence[float]


def have_pillow() -> bool:
    """True when Pillow is installed (the pictures need it)."""
    try:
        import PIL  # noqa: F401
    except ImportError:
        return False
    return True


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    from PIL import ImageFont

    return ImageFont.load_default()


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** np.floor(np.log10(raw))
    step = min((s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw), default=raw)
    start = np.ceil(lo / step) * step
    return [float(v) for v in np.arange(start, hi + step * 1e-6, step)]


def _fmt(v: float) -> str:
    if v != 0 and (abs(v) < 0.01 or abs(v) >= 1e4):
        return f"{v:.1e}"
    return f"{v:g}" if abs(v) >= 1 else f"{v:.2f}"


def line_chart(
    series: Sequence[Series],
    title: str,
    xlabel: str,
    ylabel: str,
    *,
    hline: float | None = None,
    log2_x: bool = False,
    ylim: tuple[float, float] | None = None,
    size: tuple[int, int] = (640, 400),
) -> Image.Image:
    """A line chart with axes, ticks, a legend and an optional horizontal reference line.

    ``log2_x`` puts x on a base-2 logarithmic axis (dose fractions); NaN points break lines.
    """
    from PIL import Image, ImageDraw

    width, height = size
    left, right, top, bottom = 64, 150, 28, 44
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = _font()

    def tx(v: float) -> float:
        return float(np.log2(v)) if log2_x else float(v)

    xs = [tx(v) for s in series for v in s.x if np.isfinite(v) and (v > 0 or not log2_x)]
    ys = [float(v) for s in series for v in s.y if np.isfinite(v)]
    if hline is not None:
        ys.append(hline)
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    y0, y1 = ylim if ylim is not None else ((min(ys), max(ys)) if ys else (0.0, 1.0))
    if x1 <= x0:
        x1 = x0 + 1
    if y1 <= y0:
        y1 = y0 + 1
    pad = 0.05 * (y1 - y0)
    if ylim is None:
        y0, y1 = y0 - pad, y1 + pad
    pw, ph = width - left - right, height - top - bottom

    def px(x: float, y: float) -> tuple[float, float]:
        return (
            left + (x - x0) / (x1 - x0) * pw,
            top + (1 - (y - y0) / (y1 - y0)) * ph,
        )

    draw.rectangle([left, top, left + pw, top + ph], outline=(0, 0, 0))
    for yt in _ticks(y0, y1):
        _, yy = px(x0, yt)
        draw.line([left - 4, yy, left, yy], fill=(0, 0, 0))
        draw.line([left, yy, left + pw, yy], fill=(235, 235, 235))
        draw.text((4, yy - 6), _fmt(yt), fill=(0, 0, 0), font=font)
    xticks = (
        [float(v) for v in range(int(np.floor(x0)), int(np.ceil(x1)) + 1)]
        if log2_x
        else _ticks(x0, x1)
    )
    for xt in xticks:
        if not x0 - 1e-9 <= xt <= x1 + 1e-9:
            continue
        xx, _ = px(xt, y0)
        draw.line([xx, top + ph, xx, top + ph + 4], fill=(0, 0, 0))
        label = (f"1/{2**-xt:g}" if xt < 0 else f"{2**xt:g}") if log2_x else _fmt(xt)
        draw.text((xx - 3 * len(label), top + ph + 6), label, fill=(0, 0, 0), font=font)
    if hline is not None and y0 <= hline <= y1:
        _, yy = px(x0, hline)
        for xa in range(left, left + pw, 8):
            draw.line([xa, yy, min(xa + 4, left + pw), yy], fill=(0, 0, 0))
    for i, s in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        _draw_series(
            draw, s, colour, lambda x, y: px(tx(x), float(np.clip(y, y0, y1))), log2_x=log2_x
        )
        ly = top + 6 + 16 * i
        draw.line([left + pw + 10, ly + 6, left + pw + 30, ly + 6], fill=colour, width=3)
        draw.text((left + pw + 34, ly), s.label[:18], fill=(0, 0, 0), font=font)
    draw.text((left, 8), title, fill=(0, 0, 0), font=font)
    draw.text((left + pw / 2 - 3 * len(xlabel), height - 16), xlabel, fill=(0, 0, 0), font=font)
    draw.text((4, top - 16), ylabel, fill=(0, 0, 0), font=font)
    return img


def to_u8(img: np.ndarray, lo: float = 0.1, hi: float = 99.9) -> np.ndarray:
    """An image scaled from its own ``lo`` and ``hi`` percentiles to 0..255."""
    a, b = np.percentile(img, [lo, hi])
    return (np.clip((np.asarray(img, np.float64) - a) / (b - a + 1e-12), 0, 1) * 255).astype(
        np.uint8
    )


def image_grid(
    rows: Sequence[tuple[str, Sequence[tuple[str, np.ndarray]]]], gap: int = 4
) -> Image.Image:
    """Grey images in a grid, each scaled to its own range: one row per label, titled cells."""
    from PIL import Image, ImageDraw

    font = _font()
    label_w = 70
    cells = [[Image.fromarray(to_u8(img)) for _, img in row] for _, row in rows]
    cw = max(c.width for row in cells for c in row)
    ch = max(c.height for row in cells for c in row)
    ncols = max(len(row) for row in cells)
    title_h = 16
    out = Image.new(
        "L",
        (label_w + ncols * (cw + gap), title_h + len(rows) * (ch + gap)),
        255,
    )
    draw = ImageDraw.Draw(out)
    for j, (name, _) in enumerate(rows[0][1]):
        draw.text((label_w + j * (cw + gap) + 4, 2), name, fill=0, font=font)
    for i, ((label, _), row) in enumerate(zip(rows, cells, strict=True)):
        y = title_h + i * (ch + gap)
        draw.text((4, y + ch // 2 - 6), label, fill=0, font=font)
        for j, cell in enumerate(row):
            out.paste(cell, (label_w + j * (cw + gap), y))
    return out


def _draw_series(
    draw: ImageDraw.ImageDraw,
    s: Series,
    colour: tuple[int, int, int],
    to_px: Callable[[float, float], tuple[float, float]],
    *,
    log2_x: bool,
) -> None:
    """One series' lines (NaN points, and x <= 0 on a log axis, break them) and, for up to 16
    points, its markers."""
    segments: list[list[tuple[float, float]]] = [[]]
    for xv, yv in zip(s.x, s.y, strict=False):
        if np.isfinite(xv) and np.isfinite(yv) and (xv > 0 or not log2_x):
            segments[-1].append(to_px(xv, yv))
        elif segments[-1]:
            segments.append([])
    for seg in segments:
        if len(seg) > 1:
            draw.line(seg, fill=colour, width=2)
        if len(s.x) <= 16:
            for p in seg:
                draw.ellipse([p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2], fill=colour)
