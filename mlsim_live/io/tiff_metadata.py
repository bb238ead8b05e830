"""Physical metadata of a TIFF file: pixel size, NA and emission wavelength (OME, ImageJ, tags)."""

from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

from mlsim_live.errors import one_line

if TYPE_CHECKING:  # pragma: no cover
    import tifffile

log = logging.getLogger(__name__)

PIXEL_SIZE_RANGE_UM = (0.005, 2.0)  # as accepted by mlsim_live.sim.optics.Optics

_UNIT_TO_UM = {
    "um": 1.0,
    "µm": 1.0,
    "μm": 1.0,
    "\\u00b5m": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "mm": 1e3,
    "millimeter": 1e3,
    "cm": 1e4,
    "centimeter": 1e4,
    "m": 1e6,
    "meter": 1e6,
}
_RESUNIT_TO_UM = {3: 1e4, 4: 1e3, 5: 1.0}  # TIFF ResolutionUnit: centimetre, millimetre, micrometre


def _format_of(tif: tifffile.TiffFile) -> str:
    if tif.is_ome:
        return "ome"
    if tif.is_imagej:
        return "imagej"
    if tif.is_shaped:
        return "shaped"
    return "tiff"


def _physical_metadata(
    path: Path, tif: tifffile.TiffFile, fmt: str
) -> tuple[float | None, float | None, float | None]:
    """Pixel size (um), NA and emission wavelength (nm) from the file's metadata, if any."""
    pixel = na = wavelength = None
    try:
        if fmt == "ome":
            pixel, na, wavelength = _ome_metadata(tif.ome_metadata or "")
        if pixel is None and fmt == "imagej":
            pixel = _imagej_pixel_um(tif)
        if pixel is None and fmt == "shaped":
            meta = (tif.shaped_metadata or ({},))[0]
            value = meta.get("pixel_size_um") if isinstance(meta, dict) else None
            pixel = float(value) if value is not None else None
        if pixel is None:
            pixel = _resolution_pixel_um(tif)
    except Exception as exc:  # metadata oddities are recoverable
        log.warning("%s: cannot read the pixel size from metadata (%s)", path, one_line(exc))
        pixel = None
    if pixel is not None and not (
        math.isfinite(pixel) and PIXEL_SIZE_RANGE_UM[0] <= pixel <= PIXEL_SIZE_RANGE_UM[1]
    ):
        log.warning(
            "%s: ignoring metadata pixel size %g um (expected %g to %g um)",
            path,
            pixel,
            *PIXEL_SIZE_RANGE_UM,
        )
        pixel = None
    return pixel, na, wavelength


def _xresolution(tif: tifffile.TiffFile) -> float | None:
    tag = tif.pages.first.tags.get("XResolution")
    if tag is None:
        return None
    num, den = tag.value
    if not num or not den:
        return None
    return num / den


def _imagej_pixel_um(tif: tifffile.TiffFile) -> float | None:
    meta = tif.imagej_metadata or {}
    unit = str(meta.get("unit", "")).strip().lower()
    factor = _UNIT_TO_UM.get(unit)
    xres = _xresolution(tif)
    if factor is None or not xres:
        return None
    return factor / xres


def _resolution_pixel_um(tif: tifffile.TiffFile) -> float | None:
    unit_tag = tif.pages.first.tags.get("ResolutionUnit")
    factor = _RESUNIT_TO_UM.get(int(unit_tag.value) if unit_tag is not None else 2)
    xres = _xresolution(tif)
    if factor is None or not xres:
        return None
    return factor / xres


def _ome_metadata(xml: str) -> tuple[float | None, float | None, float | None]:
    if not xml:
        return None, None, None
    root = ET.fromstring(xml)

    def find(tag: str) -> ET.Element | None:
        return next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == tag), None)

    pixel = na = wavelength = None
    pixels = find("Pixels")
    if pixels is not None and (size_x := pixels.get("PhysicalSizeX")):
        unit = pixels.get("PhysicalSizeXUnit", "µm").strip().lower()
        factor = _UNIT_TO_UM.get(unit)
        if factor is not None:
            pixel = float(size_x) * factor
    objective = find("Objective")
    if objective is not None and (lens_na := objective.get("LensNA")):
        na = float(lens_na)
    channel = find("Channel")
    if channel is not None and (emission := channel.get("EmissionWavelength")):
        unit = channel.get("EmissionWavelengthUnit", "nm").strip().lower()
        factor = _UNIT_TO_UM.get(unit)
        if factor is not None:
            wavelength = float(emission) * factor * 1e3
    return pixel, na, wavelength
