"""The reconstructor seam: anything that turns one 9-frame SIM group into an image, and the
optional capabilities a reconstructor declares by implementing small Protocols."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mlsim_live.constants import GROUP_SIZE, N_ANGLES, N_PHASES

__all__ = [
    "GROUP_SIZE",
    "N_ANGLES",
    "N_PHASES",
    "Capabilities",
    "Reconstructor",
    "SupportsEstimate",
    "SupportsFallback",
    "SupportsOOD",
    "SupportsStages",
    "SupportsWarmUp",
    "warm_up",
]

log = logging.getLogger(__name__)


@runtime_checkable
class Reconstructor(Protocol):
    """Reconstructs one SIM group.

    Attributes
    ----------
    name : str
        What it is, e.g. ``"wiener"``, ``"widefield"`` or ``"rcan:<model file name>"``.
    provider : str
        Where it runs, e.g. ``"numpy"`` or ``"CPUExecutionProvider"``.
    scale : int
        Output pixels per input pixel along each axis (2 for the 2x SR grid).
    """

    name: str
    provider: str
    scale: int

    def reconstruct(self, group: np.ndarray) -> np.ndarray:
        """Reconstruct a group.

        Parameters
        ----------
        group : ndarray, shape (9, H, W)
            Raw frames in angle-major order (a0p0 a0p1 a0p2 a1p0 ... a2p2), any numeric dtype,
            camera counts with offset.

        Returns
        -------
        ndarray, shape (scale*H, scale*W), float32
        """
        ...


# ---- optional capabilities -----------------------------------------------------------------
# What a reconstructor MAY do beside `Reconstructor`. Callers find out once, when they take the
# reconstructor (`Capabilities.of`), and never probe attribute names per call.


@runtime_checkable
class SupportsOOD(Protocol):
    """Checks whether a group lies outside the ranges its model was trained on.

    Attributes
    ----------
    training_ranges : object or None
        The model card's training ranges; None when the card records none, and the check
        cannot run (summaries then report ``ood_groups: null``, never 0).
    """

    @property
    def training_ranges(self) -> Any: ...

    def check_ood(self, group: np.ndarray, *, warn: bool = True, fresh: bool = False) -> list[str]:
        """Reasons why ``group`` lies outside the training ranges (empty: inside).

        ``warn``: log a warning when the verdict turns out-of-distribution (False: the caller
        reports). ``fresh``: estimate on this group now (the first group of a file).
        """
        ...


@runtime_checkable
class SupportsWarmUp(Protocol):
    """Runs once on a frame shape so the first real group is not slow."""

    def warm_up(self, hw: tuple[int, int]) -> Any:
        """Prepare for groups of ``hw`` = (H, W) frames."""
        ...


@runtime_checkable
class SupportsEstimate(Protocol):
    """Keeps the pattern estimate of the last group (Wiener and the Wiener-fed model)."""

    @property
    def last_estimate(self) -> Any:
        """An object with ``to_dict()``, or None before the first group."""
        ...


@runtime_checkable
class SupportsFallback(Protocol):
    """Reconstructs some groups another way (e.g. where the pattern is not found); counts them."""

    fallback_groups: int


@runtime_checkable
class SupportsStages(Protocol):
    """Reconstructs in two stages that may run on two threads (the live worker's two-stage mode).

    ``reconstruct(group)`` is ``finish(prepare(group))``. ``prepare`` holds the checks, the
    normalization and a physics prior (e.g. the Wiener image of ``wiener-rcan``); it is called
    in acquisition order, one group at a time, because it may reuse state between groups (the
    pattern estimate). ``finish`` holds the inference, also one group at a time and in order;
    the ``finish`` of one group may run while ``prepare`` runs the next.
    """

    def prepare(self, group: np.ndarray) -> Any:
        """The first stage of ``group`` (9, H, W): an object that only `finish` reads."""
        ...

    def finish(self, prepared: Any) -> np.ndarray:
        """The second stage: the SR image ``(scale*H, scale*W)`` float32 of a prepared group."""
        ...


@dataclass(frozen=True)
class Capabilities:
    """What a reconstructor can do beyond `Reconstructor`, found once.

    Attributes
    ----------
    ood : SupportsOOD or None
        The reconstructor, when its out-of-distribution check can run (it has one and its model
        card records training ranges).
    ood_unavailable : bool
        It has a check, but no training ranges to check against.
    warm_up, estimate, fallback, stages : bool
        It implements `SupportsWarmUp`, `SupportsEstimate`, `SupportsFallback`,
        `SupportsStages`.
    """

    ood: SupportsOOD | None = None
    ood_unavailable: bool = False
    warm_up: bool = False
    estimate: bool = False
    fallback: bool = False
    stages: bool = False

    @classmethod
    def of(cls, reconstructor: object) -> Capabilities:
        """The capabilities ``reconstructor`` declares by implementing the Protocols above."""
        ood = reconstructor if isinstance(reconstructor, SupportsOOD) else None
        unavailable = ood is not None and ood.training_ranges is None
        return cls(
            ood=None if unavailable else ood,
            ood_unavailable=unavailable,
            warm_up=isinstance(reconstructor, SupportsWarmUp),
            estimate=isinstance(reconstructor, SupportsEstimate),
            fallback=isinstance(reconstructor, SupportsFallback),
            stages=isinstance(reconstructor, SupportsStages),
        )


def warm_up(reconstructor: object, frame_shape: tuple[int, int]) -> None:
    """Warm ``reconstructor`` up on the camera's frame shape, if it `SupportsWarmUp`.

    Reconstructors without it are left alone (a dummy group could, e.g., fix a Wiener
    reconstructor's reused pattern estimate to nonsense). A failure is logged, not raised: it
    shows again, counted, on the first group.
    """
    if not isinstance(reconstructor, SupportsWarmUp):
        return
    started = time.perf_counter()
    try:
        reconstructor.warm_up((int(frame_shape[0]), int(frame_shape[1])))
    except Exception as exc:
        log.warning("warm-up of %s failed: %s", getattr(reconstructor, "name", "?"), exc)
        return
    log.debug("reconstructor warmed up in %.0f ms", (time.perf_counter() - started) * 1e3)
