"""What every process of a batch runs: `run_group`, with this process's cached reconstructors and
open files (each Dask worker loads the model once)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from mlsim_live.batch.config import GroupOutput, GroupTask, ReadOptions, ReconConfig
from mlsim_live.errors import MLSimError
from mlsim_live.io.tiff import RawStack, read_raw_stack
from mlsim_live.recon.base import Capabilities

log = logging.getLogger(__name__)

_CACHE_LOCK = threading.Lock()
_RECONSTRUCTORS: dict[tuple[Any, ...], tuple[Any, threading.Lock]] = {}
_RECONSTRUCTOR_LOADS: dict[tuple[Any, ...], int] = {}
_GROUPS_DONE = [0]
_STACKS: OrderedDict[tuple[Any, ...], RawStack] = OrderedDict()
_MAX_OPEN_STACKS = 8


def cached_reconstructor(config: ReconConfig, optics: Any) -> tuple[Any, threading.Lock]:
    """Return this process's reconstructor for ``(config, optics)``, built on first use.

    The lock serializes `reconstruct` and the read of ``last_estimate`` between threads.
    """
    key = (config.method, config.model, optics, config.offset_adu)
    with _CACHE_LOCK:
        hit = _RECONSTRUCTORS.get(key)
        if hit is None:
            from mlsim_live.recon import make_reconstructor

            started = time.perf_counter()
            reconstructor = make_reconstructor(
                config.method, model=config.model, optics=optics, offset_adu=config.offset_adu
            )
            hit = _RECONSTRUCTORS[key] = (reconstructor, threading.Lock())
            if Capabilities.of(reconstructor).ood_unavailable:
                log.warning(
                    "%s has no model card with training ranges: the out-of-distribution check "
                    "is unavailable (ood_groups: null)",
                    reconstructor.name,
                )
            _RECONSTRUCTOR_LOADS[key] = _RECONSTRUCTOR_LOADS.get(key, 0) + 1
            log.debug(
                "loaded %s in %.0f ms (pid %d)",
                reconstructor.name,
                (time.perf_counter() - started) * 1e3,
                os.getpid(),
            )
        return hit


def process_stats() -> dict[str, Any]:
    """This process's work: pid, groups reconstructed, and reconstructor builds per config.

    On a Dask cluster, ``client.run(process_stats)`` shows how the work was spread and that
    each worker built its reconstructor once.
    """
    with _CACHE_LOCK:
        return {
            "pid": os.getpid(),
            "groups": _GROUPS_DONE[0],
            "loads": {repr(k): n for k, n in _RECONSTRUCTOR_LOADS.items()},
        }


def cached_stack(path: str | os.PathLike[str], read: ReadOptions) -> RawStack:
    """Return this process's open `RawStack` for ``path`` (a few are kept open, LRU)."""
    path = Path(path)
    try:
        st = path.stat()
        key: tuple[Any, ...] = (str(path), st.st_mtime_ns, st.st_size, read)
    except OSError:
        key = (str(path), None, None, read)
    with _CACHE_LOCK:
        stack = _STACKS.get(key)
        if stack is not None:
            _STACKS.move_to_end(key)
            return stack
    stack = read_raw_stack(path, read.order, angle_axis=read.angle_axis, phase_axis=read.phase_axis)
    with _CACHE_LOCK:
        if key in _STACKS:  # another thread opened it meanwhile
            stack.close()
            return _STACKS[key]
        _STACKS[key] = stack
        while len(_STACKS) > _MAX_OPEN_STACKS:
            # no close(): another thread may still read it; it closes when the last user drops it
            _STACKS.popitem(last=False)
    return stack


def clear_caches() -> None:
    """Close cached files and drop cached reconstructors of this process."""
    with _CACHE_LOCK:
        for stack in _STACKS.values():
            stack.close()
        _STACKS.clear()
        _RECONSTRUCTORS.clear()


def close_stacks() -> None:
    """Close this process's cached files (reconstructors stay loaded)."""
    with _CACHE_LOCK:
        for stack in _STACKS.values():
            stack.close()
        _STACKS.clear()


def run_group(task: GroupTask) -> GroupOutput:
    """Read and reconstruct one group; the only function that both execution paths run.

    When the reconstructor has an out-of-distribution check (RCAN with training ranges in its
    model card), the group is checked too; its reasons come back in ``ood`` (the warning is the
    caller's, once per file). Group 0 of a file is always estimated afresh, so a verdict never
    carries over from the previous file.
    """
    from mlsim_live.validation import output_problem

    stack = cached_stack(task.path, task.read)
    group = stack.group(task.t)
    reconstructor, lock = cached_reconstructor(task.config, task.optics)
    caps = Capabilities.of(reconstructor)  # no training ranges: caps.ood is None, never "0"
    with lock:
        fallbacks = reconstructor.fallback_groups if caps.fallback else 0
        sr = np.asarray(reconstructor.reconstruct(group), dtype=np.float32)
        problem = output_problem(sr)
        if problem is not None:
            raise MLSimError(f"{task.path}: group {task.t}: {problem}")
        estimate = reconstructor.last_estimate if caps.estimate else None
        estimate_dict = estimate.to_dict() if estimate is not None else None
        ood = None
        if caps.ood is not None:
            ood = list(caps.ood.check_ood(group, warn=False, fresh=task.t == 0))
        fallback = bool(reconstructor.fallback_groups - fallbacks) if caps.fallback else None
    with _CACHE_LOCK:
        _GROUPS_DONE[0] += 1
    return GroupOutput(
        t=task.t,
        sr=sr,
        estimate=estimate_dict,
        reconstructor=str(reconstructor.name),
        provider=str(reconstructor.provider),
        scale=int(reconstructor.scale),
        ood=ood,
        fallback=fallback,
    )
