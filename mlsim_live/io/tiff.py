"""TIFF files: the public import path for reading raw stacks and writing reconstructions.

Reading lives in `mlsim_live.io.raw_stack` (with its frame readers, layout and metadata in
``tiff_frames``, ``tiff_layout`` and ``tiff_metadata``), writing in `mlsim_live.io.tiff_write`;
this module re-exports both and holds the file-name helpers that batch commands share.
"""

from __future__ import annotations

import os
from pathlib import Path

from mlsim_live.constants import ORDERS
from mlsim_live.io.raw_stack import RawStack, check_group, iter_groups, read_raw_stack
from mlsim_live.io.tiff_frames import GroupArray
from mlsim_live.io.tiff_metadata import PIXEL_SIZE_RANGE_UM
from mlsim_live.io.tiff_write import read_tiff_metadata, write_tiff_atomic, write_tiff_stack_atomic

__all__ = [
    "ORDERS",
    "PIXEL_SIZE_RANGE_UM",
    "TIFF_SUFFIXES",
    "GroupArray",
    "RawStack",
    "check_group",
    "find_tiffs",
    "iter_groups",
    "output_stem",
    "read_raw_stack",
    "read_tiff_metadata",
    "write_tiff_atomic",
    "write_tiff_stack_atomic",
]

TIFF_SUFFIXES = (".tif", ".tiff")


def find_tiffs(folder: Path) -> list[Path]:
    """All ``*.tif``/``*.tiff`` files under ``folder`` (recursive, sorted, hidden files skipped)."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith(TIFF_SUFFIXES):
                found.append(Path(root) / name)
    return found


def output_stem(path: Path) -> str:
    """File name without ``.tif``/``.tiff`` and a trailing ``.ome``."""
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem
