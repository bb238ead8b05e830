"""Typed run statistics: what the pipeline counts (`RunStats`), what each front end adds (its own
small section), and `RunSummary`, their composition and the one JSON form of a run.

The pipeline owns `RunStats`; the hook (`SIMProcessor`), the acquisition loop, the demo, replay
and the outputs each add a frozen section with a ``to_dict`` instead of writing keys into a
shared dict. ``*_summary.json`` is ``RunSummary.to_dict()``: the pipeline's keys first, then
each section's, in order. Only the standard library is imported.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable


@dataclass(frozen=True)
class Percentiles:
    """p50 and p95 of a run's latencies in ms (None before the first value)."""

    p50: float | None = None
    p95: float | None = None

    @classmethod
    def of(cls, figures: Mapping[str, float | None]) -> Percentiles:
        """From ``{"p50": .., "p95": ..}`` (e.g. `mlsim_live.latency.LatencyWindow.percentiles`)."""
        return cls(figures.get("p50"), figures.get("p95"))

    def to_dict(self) -> dict[str, float | None]:
        """``{"p50": .., "p95": ..}``, as in the summary JSON."""
        return {"p50": self.p50, "p95": self.p95}


@dataclass(frozen=True)
class IncompleteGroupInfo:
    """A group that never completed: its key and the ``(angle, phase)`` frames it lacked."""

    key: Mapping[str, Any]
    missing: tuple[tuple[int, int], ...]

    def to_dict(self) -> dict[str, Any]:
        """``{"key": .., "missing": [[angle, phase], ..]}``."""
        return {"key": dict(self.key), "missing": [list(m) for m in self.missing]}


@dataclass(frozen=True)
class SinkFailure:
    """A sink that raised and was fed no more: its name, the cause, where, and what it lost."""

    sink: str
    error: str
    group: Mapping[str, Any]
    groups_lost: int

    def to_dict(self) -> dict[str, Any]:
        """The entry of ``sink_failures`` in the summary JSON."""
        return {
            "sink": self.sink,
            "error": self.error,
            "group": dict(self.group),
            "groups_lost": self.groups_lost,
        }


@dataclass(frozen=True)
class WorkerStats:
    """A consistent snapshot of the reconstruction worker's counters (see `ReconstructionWorker`).

    ``ood_groups`` is None when the check is unavailable (a model without its card);
    ``fallback_groups`` is None unless the method reconstructs some groups another way;
    ``low_signal_groups`` (of those, the groups given the widefield image for too little fine
    structure above the noise, wiener-rcan) is None for methods without that guard;
    ``stages`` is 2 when the worker prepares one group while it infers the previous one.
    """

    groups_submitted: int
    groups_reconstructed: int
    groups_dropped: int
    groups_waiting: int
    errors: int
    errors_by_reason: Mapping[str, int]
    delivery_errors: int
    backpressure_waits: int
    ood_groups: int | None
    ood_checks: int
    ood_check: str
    latency_ms: Percentiles
    reconstruct_ms: Percentiles
    fallback_groups: int | None = None
    low_signal_groups: int | None = None
    stages: int = 1

    @property
    def groups_done(self) -> int:
        """Submitted groups whose fate is known or that wait: reconstructed, dropped, errors,
        waiting (the rest are in flight)."""
        return self.groups_reconstructed + self.groups_dropped + self.errors + self.groups_waiting


@dataclass(frozen=True)
class RunStats:
    """What the pipeline counted in a run, safe to keep: a frozen snapshot.

    The keys of interface.md's ``*_summary.json``: ``groups_acquired``,
    ``groups_reconstructed``, ``groups_dropped``, ``errors`` (by reason in
    ``errors_by_reason``), ``latency_ms`` (last raw frame of a group in -> its reconstruction
    out), ``provider``, ``model``; and the accounting of every frame and group
    (`mlsim_live.live.pipeline.INVARIANTS`): ``frames_received``, ``frames_rejected``,
    ``frames_after_close``, ``frames_incomplete``, ``frames_pending``, ``duplicates``,
    ``groups_refused``, ``groups_pending``, ``groups_waiting``, ``groups_in_flight``,
    ``incomplete_groups`` (``incomplete`` lists the first 100); the out-of-distribution check
    (``ood_groups`` of ``ood_checks``, ``ood_check`` says whether it ran); the sinks
    (``sink_errors``, ``sink_failures``), ``delivery_errors``, ``backpressure_waits``,
    ``reconstruct_ms`` (inside the reconstructor), ``policy``, ``simulated``,
    ``pixel_size_um``, ``sr_groups_per_s``, for methods that fall back, ``fallback_groups``
    (and, of those, ``low_signal_groups`` given the widefield image for too little signal),
    and ``stages`` (1, or 2 when the worker prepares a group while it infers the previous one).
    """

    groups_acquired: int
    groups_reconstructed: int
    groups_dropped: int
    errors: int
    errors_by_reason: Mapping[str, int]
    groups_refused: int
    latency_ms: Percentiles
    reconstruct_ms: Percentiles
    provider: str
    model: str
    incomplete_groups: int
    frames_incomplete: int
    incomplete: tuple[IncompleteGroupInfo, ...]
    duplicates: int
    ood_groups: int | None
    ood_checks: int
    ood_check: str
    frames_received: int
    frames_rejected: int
    frames_after_close: int
    frames_pending: int
    groups_pending: int
    groups_waiting: int
    groups_in_flight: int
    backpressure_waits: int
    sink_errors: int
    sink_failures: tuple[SinkFailure, ...]
    delivery_errors: int
    policy: str
    simulated: bool
    pixel_size_um: float | None
    sr_groups_per_s: float | None
    fallback_groups: int | None = None
    low_signal_groups: int | None = None
    stages: int = 1

    def groups_lost_by(self, sink: str) -> int:
        """Groups the sink named ``sink`` (see ``sink_name``) missed after its failure."""
        return sum(f.groups_lost for f in self.sink_failures if f.sink == sink)

    def to_dict(self) -> dict[str, Any]:
        """The pipeline's part of the summary JSON (``fallback_groups`` only when counted)."""
        out: dict[str, Any] = {}
        for name in _RUN_STATS_KEYS:
            value = getattr(self, name)
            if name in ("fallback_groups", "low_signal_groups") and value is None:
                continue
            if isinstance(value, Percentiles):
                value = value.to_dict()
            elif name in ("incomplete", "sink_failures"):
                value = [item.to_dict() for item in value]
            elif name == "errors_by_reason":
                value = dict(value)
            out[name] = value
        return out


_RUN_STATS_KEYS = tuple(RunStats.__dataclass_fields__)


@runtime_checkable
class StatsSection(Protocol):
    """What a front end adds to a run's summary: a frozen object with its own JSON keys."""

    def to_dict(self) -> dict[str, Any]:
        """This section's keys of the summary JSON."""
        ...


@dataclass(frozen=True)
class Figures:
    """Figures that another component reports as a mapping (e.g. the trust sink's)."""

    values: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The figures as they are."""
        return dict(self.values)


S = TypeVar("S", bound=StatsSection)


@dataclass(frozen=True)
class RunSummary(Mapping[str, Any]):
    """A run's statistics: the pipeline's `RunStats` and the sections its front ends add.

    Read it typed (``summary.run.groups_reconstructed``, ``summary.section(HookStats)``) or by
    the keys of ``*_summary.json`` (it is a read-only mapping of `to_dict`). A key that two
    sections both give takes the later section's value.
    """

    run: RunStats
    sections: tuple[StatsSection, ...] = field(default=())

    def section(self, kind: type[S]) -> S | None:
        """The (last) section of type ``kind``, or None."""
        found = None
        for section in self.sections:
            if isinstance(section, kind):
                found = section
        return found

    def with_sections(self, *sections: StatsSection) -> RunSummary:
        """This summary with ``sections`` appended."""
        return RunSummary(self.run, (*self.sections, *sections))

    def to_dict(self) -> dict[str, Any]:
        """The summary JSON: the pipeline's keys, then each section's, in order (a fresh dict)."""
        out = self.run.to_dict()
        for section in self.sections:
            out.update(section.to_dict())
        return out

    @functools.cached_property
    def _flat(self) -> dict[str, Any]:
        return self.to_dict()

    def __getitem__(self, key: str) -> Any:
        return self._flat[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._flat)

    def __len__(self) -> int:
        return len(self._flat)
