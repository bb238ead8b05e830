"""File input/output: lazy raw SIM stacks in, atomic TIFF and JSON outputs out."""

from mlsim_live.io.atomic import atomic_path, write_json_atomic
from mlsim_live.io.tiff import (
    ORDERS,
    GroupArray,
    RawStack,
    check_group,
    find_tiffs,
    iter_groups,
    output_stem,
    read_raw_stack,
    read_tiff_metadata,
    write_tiff_atomic,
    write_tiff_stack_atomic,
)

__all__ = [
    "ORDERS",
    "GroupArray",
    "RawStack",
    "atomic_path",
    "check_group",
    "find_tiffs",
    "iter_groups",
    "output_stem",
    "read_raw_stack",
    "read_tiff_metadata",
    "write_json_atomic",
    "write_tiff_atomic",
    "write_tiff_stack_atomic",
]
