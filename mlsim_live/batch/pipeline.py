"""The groups of all files of a batch, submitted in order a bounded window ahead of the writer."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mlsim_live.batch.config import GroupOutput, GroupTask, ReadOptions, ReconConfig
from mlsim_live.batch.group import cached_stack, run_group
from mlsim_live.batch.plan import FileJob
from mlsim_live.errors import MLSimError
from mlsim_live.io.tiff import RawStack


@dataclass
class FilePlan:
    """A file opened on the client: what its tasks need and what its output looks like."""

    stack: RawStack
    optics: Any
    pixel_size_um: float | None


@dataclass
class GroupPipeline:
    """Submits groups of all files in order, a bounded window ahead, and yields them in order."""

    jobs: list[FileJob]
    read: ReadOptions
    config: ReconConfig
    executor: Any
    plans: dict[int, FilePlan | MLSimError] = field(default_factory=dict)
    pending: deque[tuple[int, int, Any]] = field(default_factory=deque)
    cancelled: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._tasks = self._task_iter()
        self._exhausted = False

    def _task_iter(self) -> Iterator[tuple[int, int, GroupTask]]:
        for i, job in enumerate(self.jobs):
            try:
                stack = cached_stack(job.input, self.read)
                optics = self.config.optics_for(stack)
                plan = FilePlan(stack, optics, self.config.pixel_size_for(stack))
            except MLSimError as exc:
                self.plans[i] = exc
                continue
            self.plans[i] = plan
            path = str(job.input.resolve())
            for t in range(stack.n_groups):
                if i in self.cancelled:
                    break
                yield i, t, GroupTask(path, self.read, t, self.config, optics)

    def _submit_one(self) -> bool:
        try:
            i, t, task = next(self._tasks)
        except StopIteration:
            self._exhausted = True
            return False
        self.pending.append((i, t, self.executor.submit(run_group, task)))
        return True

    def fill(self) -> None:
        """Submit until the window is full."""
        while not self._exhausted and len(self.pending) < self.executor.window:
            if not self._submit_one():
                break

    def plan(self, i: int) -> FilePlan | MLSimError:
        """Open file ``i`` (if not yet) and return its plan or the error opening it."""
        while i not in self.plans and not self._exhausted:
            self._submit_one()
        self.fill()
        return self.plans[i]

    def result(self, i: int, t: int) -> GroupOutput:
        """The output of group ``t`` of file ``i`` (waits for it)."""
        self.fill()
        if not self.pending and not self._submit_one():
            raise RuntimeError(f"group {t} of file {i} was never submitted")
        head_i, head_t, future = self.pending.popleft()
        if (head_i, head_t) != (i, t):
            raise RuntimeError(f"groups out of order: expected {(i, t)}, got {(head_i, head_t)}")
        self.fill()  # keep the workers busy while this one finishes
        return future.result()

    def cancel(self, i: int) -> None:
        """Drop the remaining groups of file ``i``."""
        self.cancelled.add(i)
        while self.pending and self.pending[0][0] == i:
            _, _, future = self.pending.popleft()
            with contextlib.suppress(Exception):
                future.cancel()
