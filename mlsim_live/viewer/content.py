"""What the viewer's two panels show for a result and the view options (no Qt).

The window asks `view_content` for the arrays, rectangles and titles and only hands them to
its widgets, so the choice of what is shown is tested without a display.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from mlsim_live.constants import GROUP_SIZE
from mlsim_live.errors import MLSimError
from mlsim_live.live.results import GroupResult
from mlsim_live.viewer.imaging import log_power_spectrum

log = logging.getLogger(__name__)

#: Display kinds; each panel keeps separate levels per kind.
IMAGE = "image"
SPECTRUM = "spectrum"
N_RAW = GROUP_SIZE

#: (x, y, width, height) in view coordinates: raw camera pixels, or frequency steps.
Rect = tuple[float, float, float, float]


@dataclass(frozen=True)
class PanelContent:
    """One panel's picture: the array, where it lies in view coordinates, and its title."""

    data: np.ndarray
    rect: Rect
    title: str


@dataclass(frozen=True)
class ViewContent:
    """Both panels' pictures for one result, with what the window needs around them.

    Attributes
    ----------
    kind : str
        `IMAGE` or `SPECTRUM`.
    left, sr : PanelContent
        The widefield (or raw frame) and the super-resolution panel.
    field_width_px : int
        Width of the field of view in raw camera pixels (for the scale bar).
    scale_bar : bool
        True when the panels show images in raw-pixel coordinates (no bar on spectra).
    geometry : tuple
        Changes when the mode or an image size changes: the window fits its view then.
    info : str
        The header line: group number, its axes and latency.
    """

    kind: str
    left: PanelContent
    sr: PanelContent
    field_width_px: int
    scale_bar: bool
    geometry: tuple[object, ...]
    info: str

    def bounds(self) -> Rect:
        """The smallest rectangle holding both panels' pictures."""
        x0 = min(self.left.rect[0], self.sr.rect[0])
        y0 = min(self.left.rect[1], self.sr.rect[1])
        x1 = max(r[0] + r[2] for r in (self.left.rect, self.sr.rect))
        y1 = max(r[1] + r[3] for r in (self.left.rect, self.sr.rect))
        return (x0, y0, x1 - x0, y1 - y0)


def check_raw_index(index: int | None) -> int | None:
    """``index`` as an int in 0-8, or None (the widefield).

    Raises
    ------
    MLSimError
        ``index`` is outside 0-8.
    """
    if index is not None and not 0 <= int(index) < N_RAW:
        raise MLSimError(f"raw frame {index} does not exist; expected 0 to {N_RAW - 1}")
    return None if index is None else int(index)


def centred_rect(shape: tuple[int, ...]) -> Rect:
    """Rectangle of an fftshift-ed spectrum, one unit per pixel, zero frequency at (0, 0)."""
    h, w = shape[-2:]
    return (-(w // 2) - 0.5, -(h // 2) - 0.5, float(w), float(h))


def left_image(result: GroupResult, raw_index: int | None) -> tuple[np.ndarray, str]:
    """The left panel's image and title: raw frame ``raw_index`` or, failing that, the
    widefield."""
    raw = result.raw
    has_raw = raw is not None and np.ndim(raw) == 3
    if raw_index is not None:
        if has_raw and raw_index < np.shape(raw)[0]:
            title = f"Raw frame {raw_index} (angle {raw_index // 3}, phase {raw_index % 3})"
            return np.asarray(raw[raw_index]), title
        log.warning("result %d has no raw frame %d; showing the widefield", result.index, raw_index)
    n = np.shape(raw)[0] if has_raw else N_RAW
    return np.asarray(result.widefield), f"Widefield (mean of {n} frames)"


def group_info(result: GroupResult) -> str:
    """The header line for ``result``: its number, axes and latency."""
    key = ", ".join(f"{k} {v}" for k, v in result.key.items())
    where = f" ({key})" if key else ""
    return f"group #{result.index}{where} · latency {result.latency_ms:.0f} ms  "


def view_content(result: GroupResult, raw_index: int | None, spectrum: bool) -> ViewContent:
    """What both panels show for ``result``: images over the raw-pixel field of view, or log
    power spectra on the same frequency step (the SR spectrum reaches ``scale`` times
    farther)."""
    left, left_title = left_image(result, raw_index)
    sr = np.asarray(result.sr)
    h, w = np.shape(result.widefield)[-2:]
    scale = sr.shape[-1] / w if w else 1.0
    sr_title = f"Super-resolution ({scale:g}x) · {result.reconstructor}"
    if spectrum:
        suffix = " · log power spectrum"
        left_panel = PanelContent(
            log_power_spectrum(left), centred_rect(left.shape), left_title + suffix
        )
        sr_panel = PanelContent(log_power_spectrum(sr), centred_rect(sr.shape), sr_title + suffix)
    else:
        field = (0.0, 0.0, float(w), float(h))
        left_panel = PanelContent(left, field, left_title)
        sr_panel = PanelContent(sr, field, sr_title)
    return ViewContent(
        kind=SPECTRUM if spectrum else IMAGE,
        left=left_panel,
        sr=sr_panel,
        field_width_px=int(w),
        scale_bar=not spectrum,
        geometry=(spectrum, left.shape, sr.shape),
        info=group_info(result),
    )
