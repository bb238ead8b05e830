"""Where the raw frames of a group lie in a TIFF series: angle/phase axes or a plain 9*T sequence.

`_frame_index` maps each ``(group, angle-major slot)`` to a flat frame number of the file, from
the series' axes and shape alone (no pixel data is read).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mlsim_live.constants import GROUP_SIZE, N_ANGLES, N_PHASES
from mlsim_live.errors import MLSimError


def _frame_index(
    path: Path,
    full_shape: tuple[int, ...],
    full_axes: str,
    order: str,
    angle_axis: str | None,
    phase_axis: str | None,
    channel_slots: tuple[int, ...] | None = None,
) -> tuple[np.ndarray, tuple[int, int], str, str]:
    """Map each (group, angle-major slot) to a flat frame number of the file.

    ``channel_slots`` (from the OME channel names, `mlsim_live.io.ome_channels`) gives the
    angle-major slot of each channel of the ``C`` axis; it is used when no angle/phase axes are
    given or named ``A``/``P``.

    Returns
    -------
    index : ndarray of int64, shape (T, 9)
        File frame of each angle-major slot of each group.
    frame_shape : (H, W)
    layout : {"axes", "channels", "plain"}
    order : str
        ``"axes"`` for the axes layout, else the plain order used.
    """
    y, frame_shape = _frame_shape(path, full_shape, full_axes)
    # non-spatial axes (those before Y); singleton S after X is part of the frame
    lead_axes = full_axes[:y]
    lead_shape = full_shape[:y]
    a_dim = _named_axis(path, angle_axis, lead_axes, full_axes, full_shape)
    p_dim = _named_axis(path, phase_axis, lead_axes, full_axes, full_shape)
    if a_dim is None and "A" in lead_axes and "P" in lead_axes:
        a_dim = _named_axis(path, "A", lead_axes, full_axes, full_shape)
        p_dim = _named_axis(path, "P", lead_axes, full_axes, full_shape)

    if a_dim is not None and p_dim is not None:
        index = _index_by_axes(path, lead_axes, lead_shape, full_axes, full_shape, a_dim, p_dim)
        _check_no_planar_samples(path, lead_axes, lead_shape)
        return index, frame_shape, "axes", "axes"
    if channel_slots is not None:
        index = _index_by_channel(path, lead_axes, lead_shape, full_axes, channel_slots)
        _check_no_planar_samples(path, lead_axes, lead_shape)
        return index, frame_shape, "channels", "channels"
    index = _index_plain(path, lead_axes, lead_shape, frame_shape, order)
    return index, frame_shape, "plain", order


def _frame_shape(
    path: Path, full_shape: tuple[int, ...], full_axes: str
) -> tuple[int, tuple[int, int]]:
    """Position of the Y axis and ``(H, W)``; RGB samples per pixel are refused."""
    if not (full_axes.endswith("YX") or full_axes.endswith("YXS")):
        raise MLSimError(
            f"{path}: axes {full_axes} with shape {full_shape}; expected frames ending in Y, X"
        )
    y = full_axes.index("Y")
    if full_axes.endswith("YXS") and full_shape[-1] > 1:
        raise MLSimError(
            f"{path}: {full_shape[-1]} samples per pixel (RGB, axes {full_axes}); "
            "expected single-channel grayscale frames"
        )
    return y, (full_shape[y], full_shape[y + 1])


def _shape_text(full_shape: tuple[int, ...]) -> str:
    return "x".join(map(str, full_shape))


def _named_axis(
    path: Path,
    letter: str | None,
    lead_axes: str,
    full_axes: str,
    full_shape: tuple[int, ...],
) -> int | None:
    """Index of the one non-spatial axis called ``letter`` (None when no letter is given)."""
    if letter is None:
        return None
    letter = letter.upper()
    hits = [i for i, a in enumerate(lead_axes) if a == letter]
    if len(hits) != 1:
        raise MLSimError(
            f"{path}: axis {letter} {'is absent' if not hits else 'is ambiguous'} in axes "
            f"{full_axes} (shape {_shape_text(full_shape)}); "
            f"expected one of the axes {lead_axes or '-'}"
        )
    return hits[0]


def _index_by_axes(
    path: Path,
    lead_axes: str,
    lead_shape: tuple[int, ...],
    full_axes: str,
    full_shape: tuple[int, ...],
    a_dim: int,
    p_dim: int,
) -> np.ndarray:
    """Frame index when two axes hold the angles and phases; all others flatten into groups."""
    if a_dim == p_dim:
        raise MLSimError(
            f"{path}: angle and phase axis are both {lead_axes[a_dim]}; expected two different axes"
        )
    for dim, what, n_expected in ((a_dim, "angle", N_ANGLES), (p_dim, "phase", N_PHASES)):
        if lead_shape[dim] != n_expected:
            raise MLSimError(
                f"{path}: {what} axis {lead_axes[dim]} has {lead_shape[dim]} entries "
                f"(axes {full_axes}, shape {_shape_text(full_shape)}); expected {n_expected}"
            )
    other = [i for i in range(len(lead_axes)) if i not in (a_dim, p_dim)]
    n_groups = int(np.prod([lead_shape[i] for i in other])) if other else 1
    index = np.zeros((n_groups, GROUP_SIZE), dtype=np.int64)
    other_idx = (
        np.unravel_index(np.arange(n_groups), [lead_shape[i] for i in other]) if other else ()
    )
    for a in range(N_ANGLES):
        for p in range(N_PHASES):
            multi: list[Any] = [None] * len(lead_axes)
            multi[a_dim] = np.full(n_groups, a)
            multi[p_dim] = np.full(n_groups, p)
            for k, i in enumerate(other):
                multi[i] = other_idx[k]
            index[:, a * N_PHASES + p] = np.ravel_multi_index(multi, lead_shape)
    return index


def _index_by_channel(
    path: Path,
    lead_axes: str,
    lead_shape: tuple[int, ...],
    full_axes: str,
    channel_slots: tuple[int, ...],
) -> np.ndarray:
    """Frame index when the 9 channels of axis ``C`` are the patterns; other axes are groups."""
    hits = [i for i, a in enumerate(lead_axes) if a == "C"]
    if len(hits) != 1 or lead_shape[hits[0]] != len(channel_slots):
        size = lead_shape[hits[0]] if len(hits) == 1 else 0
        raise MLSimError(
            f"{path}: {len(channel_slots)} SIM pattern channel names but a channel axis of "
            f"{size} in axes {full_axes}; expected a channel axis C of {GROUP_SIZE}"
        )
    c_dim = hits[0]
    other = [i for i in range(len(lead_axes)) if i != c_dim]
    other_shape = [lead_shape[i] for i in other]
    n_groups = int(np.prod(other_shape)) if other else 1
    other_idx = np.unravel_index(np.arange(n_groups), other_shape) if other else ()
    index = np.zeros((n_groups, GROUP_SIZE), dtype=np.int64)
    for channel, slot in enumerate(channel_slots):
        multi: list[Any] = [None] * len(lead_axes)
        multi[c_dim] = np.full(n_groups, channel)
        for k, i in enumerate(other):
            multi[i] = other_idx[k]
        index[:, slot] = np.ravel_multi_index(multi, lead_shape)
    return index


def _index_plain(
    path: Path,
    lead_axes: str,
    lead_shape: tuple[int, ...],
    frame_shape: tuple[int, int],
    order: str,
) -> np.ndarray:
    """Frame index of a plain sequence of 9*T frames in ``order`` (one non-spatial axis > 1)."""
    big = [(a, n) for a, n in zip(lead_axes, lead_shape) if n > 1]
    if not big:
        raise MLSimError(
            f"{path}: found a single 2D image of {frame_shape[0]}x{frame_shape[1]}; "
            f"expected a stack of 9*T frames ({N_ANGLES} angles x {N_PHASES} phases per group)"
        )
    if len(big) > 1:
        big_axes = "".join(a for a, _ in big)
        big_shape = "x".join(str(n) for _, n in big)
        raise MLSimError(
            f"{path}: found {len(big) + 2}D data of shape {big_shape}x{frame_shape[0]}x"
            f"{frame_shape[1]} with axes {big_axes}YX that do not say which is angle and which "
            "is phase; expected a plain stack of 9*T frames, axes named A and P, or "
            f"--angle-axis/--phase-axis naming two of {big_axes}"
        )
    n_frames = int(np.prod(lead_shape)) if lead_shape else 1
    if n_frames % GROUP_SIZE:
        raise MLSimError(
            f"{path}: found {n_frames} frames of {frame_shape[0]}x{frame_shape[1]}; expected a "
            f"multiple of {GROUP_SIZE} ({N_ANGLES} angles x {N_PHASES} phases per group)"
        )
    _check_no_planar_samples(path, lead_axes, lead_shape)
    n_groups = n_frames // GROUP_SIZE
    slots = np.arange(GROUP_SIZE)
    if order == "angle-major":
        within = slots
    else:  # phase-major file order p0a0 p0a1 p0a2 p1a0 ...: slot a*3+p is at file p*3+a
        within = (slots % N_PHASES) * N_ANGLES + slots // N_PHASES
    index = np.arange(n_groups)[:, None] * GROUP_SIZE + within[None, :]
    return index.astype(np.int64)


def _check_no_planar_samples(path: Path, lead_axes: str, lead_shape: tuple[int, ...]) -> None:
    """Planar RGB-like samples (an ``S`` axis before Y) are not SIM frames."""
    if "S" in lead_axes and lead_shape[lead_axes.index("S")] > 1:
        raise MLSimError(
            f"{path}: {lead_shape[lead_axes.index('S')]} planar samples per pixel (RGB-like, "
            f"axes {lead_axes}YX); expected single-channel grayscale frames"
        )


def _squeezed_axes(axes: str, shape: tuple[int, ...]) -> str:
    """Axes of length > 1, and always Y and X."""
    return "".join(a for a, n in zip(axes, shape) if n > 1 or a in "YX")
