"""SIM patterns named by OME channels: a channel axis of 9 channels ``A<angle>P<phase>``.

pymmcore-plus's OME-TIFF writer saves a SIM acquisition (`mlsim_live.live.plus_handler`) as
``T x C x Y x X`` with the pattern presets (``A0P0`` .. ``A2P2``) as the channel names; the
channel axis then holds angle and phase together. `_channel_slots` maps each channel to its
angle-major slot ``angle * 3 + phase`` (no pixel data is read).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from mlsim_live.constants import GROUP_SIZE, N_ANGLES, N_PHASES
from mlsim_live.errors import MLSimError

_PATTERN_NAME = re.compile(r"^A(\d)P(\d)$")  # the preset names of plus_handler.sim_channels
_EXPECTED = "9 channels named A0P0..A2P2 (A<angle>P<phase>, each once)"


def _ome_channel_names(xml: str) -> list[str]:
    """Names of the channels of the first OME ``Image`` (``""`` for a channel without a name)."""
    if not xml:
        return []
    root = ET.fromstring(xml)
    image = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Image"), None)
    if image is None:
        return []
    return [str(e.get("Name", "")) for e in image.iter() if e.tag.rsplit("}", 1)[-1] == "Channel"]


def _pattern_of(name: str) -> tuple[int, int] | None:
    """``"A1P2"`` -> ``(1, 2)``; None for a name that is no SIM pattern."""
    match = _PATTERN_NAME.match(name.strip())
    if not match:
        return None
    angle, phase = int(match.group(1)), int(match.group(2))
    return (angle, phase) if angle < N_ANGLES and phase < N_PHASES else None


def _channel_slots(path: Path, names: list[str]) -> tuple[int, ...] | None:
    """Angle-major slot of each channel, or None when no channel name looks like ``A<a>P<p>``.

    Raises
    ------
    MLSimError
        When some names look like SIM patterns but are not the complete set A0P0..A2P2.
    """
    looks_like_pattern = [re.match(r"^A\d+P\d+$", n.strip()) is not None for n in names]
    if not any(looks_like_pattern):
        return None
    patterns = [_pattern_of(n) for n in names]
    complete = {(a, p) for a in range(N_ANGLES) for p in range(N_PHASES)}
    if len(names) != GROUP_SIZE or None in patterns or set(patterns) != complete:
        shown = ",".join(n.strip() or "?" for n in names)
        raise MLSimError(
            f"{path}: OME channel names {shown} ({len(names)} channels) are not a complete "
            f"set of SIM patterns; expected {_EXPECTED}"
        )
    return tuple(pt[0] * N_PHASES + pt[1] for pt in patterns if pt is not None)
