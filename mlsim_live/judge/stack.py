"""A real raw stack and what its JSON sidecar says about it (optics, frame order, sample)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlsim_live.errors import MLSimError
from mlsim_live.sim.optics import Optics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StackInfo:
    """What is known about a raw stack before reading its frames.

    Attributes
    ----------
    path : Path
        The TIFF file.
    optics : Optics or None
        Detection NA, emission wavelength and camera pixel size, when the sidecar gives all
        three (``na`` or ``na_detection``, ``emission_nm``, ``pixel_size_um``).
    pixel_size_um : float or None
        Camera pixel size (sidecar, else the TIFF's own metadata), when known.
    frame_order : str
        ``"angle-major"`` or ``"phase-major"`` (sidecar ``frame_order``; default angle-major).
    sample_kind : str or None
        Sidecar ``sample_kind`` (``"beads"`` turns on the bead measurements).
    bead_diameter_nm : float or None
        Sidecar ``bead_diameter_nm``.
    sidecar : dict
        The sidecar as read (empty without one).
    """

    path: Path
    optics: Optics | None
    pixel_size_um: float | None
    frame_order: str = "angle-major"
    sample_kind: str | None = None
    bead_diameter_nm: float | None = None
    sidecar: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def name(self) -> str:
        """The file's stem."""
        return self.path.stem

    @property
    def is_beads(self) -> bool:
        """True for a bead sample."""
        return (self.sample_kind or "").lower() == "beads"


def sidecar_path(path: Path) -> Path:
    """``<stem>.json`` beside the stack."""
    return path.with_suffix(".json")


def read_stack_info(path: str | Path) -> StackInfo:
    """Read a stack's sidecar ``<stem>.json`` (when present) into a `StackInfo`.

    Raises
    ------
    MLSimError
        When the sidecar is not valid JSON or holds impossible optics.
    """
    path = Path(path)
    side = sidecar_path(path)
    meta: dict[str, Any] = {}
    if side.is_file():
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise MLSimError(
                f"{side}: cannot read its JSON ({exc}); expected a JSON object"
            ) from exc
        if not isinstance(meta, dict):
            raise MLSimError(f"{side}: holds {type(meta).__name__}; expected a JSON object")
    na = meta.get("na", meta.get("na_detection"))
    wavelength = meta.get("emission_nm")
    pixel = meta.get("pixel_size_um")
    optics = None
    if na is not None and wavelength is not None and pixel is not None:
        optics = Optics(na=float(na), wavelength_nm=float(wavelength), pixel_size_um=float(pixel))
    elif meta:
        log.info("%s: sidecar lacks NA, emission or pixel size; OTF estimated from data", side)
    order_text = str(meta.get("frame_order", "angle-major")).lower()
    order = "phase-major" if order_text.startswith("phase-major") else "angle-major"
    bead = meta.get("bead_diameter_nm")
    return StackInfo(
        path=path,
        optics=optics,
        pixel_size_um=None if pixel is None else float(pixel),
        frame_order=order,
        sample_kind=None if meta.get("sample_kind") is None else str(meta["sample_kind"]),
        bead_diameter_nm=None if bead is None else float(bead),
        sidecar=meta,
    )
