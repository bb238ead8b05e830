"""Offline reconstruction of raw SIM files, on this machine or spread over a Dask cluster.

Both paths run the same function, `run_group`, on every (file, time point): it opens the file (once
per process), reads one group and reconstructs it with a per-process cached reconstructor, so each
Dask worker loads the model once and the outputs are identical to the single-machine path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mlsim_live.errors import MLSimError, one_line
from mlsim_live.io.tiff import RawStack, output_stem, read_raw_stack
from mlsim_live.recon.base import Capabilities

log = logging.getLogger(__name__)

OUTPUT_SUFFIX = "_sr"
#: At most this many distinct out-of-distribution reasons are kept in a sidecar.
MAX_OOD_REASONS = 20


# --------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class ReadOptions:
    """How raw files are read (see `mlsim_live.io.read_raw_stack`)."""

    order: str = "angle-major"
    angle_axis: str | None = None
    phase_axis: str | None = None


@dataclass(frozen=True)
class ReconConfig:
    """What reconstructs the groups; the optics given here override the files' metadata.

    Attributes
    ----------
    method : str
        ``"rcan"``, ``"wiener"`` or ``"widefield"``.
    model : str or None
        ONNX model path for ``"rcan"``.
    na, wavelength_nm, pixel_size_um : float or None
        Optics; a value missing here is taken from the file's metadata when it has one.
    offset_adu : float or None
        Camera offset to subtract instead of the reconstructor's own estimate.
    """

    method: str = "wiener"
    model: str | None = None
    na: float | None = None
    wavelength_nm: float | None = None
    pixel_size_um: float | None = None
    offset_adu: float | None = None

    def optics_for(self, stack: RawStack) -> Any:
        """`Optics` from this config and the file's metadata, or None when any part is unknown.

        The one rule of `mlsim_live.sim.optics.resolve_optics`: a lone ``--na`` or
        ``--wavelength-nm`` whose partner the file's metadata does not supply raises.
        """
        from mlsim_live.sim.optics import OpticsValues, resolve_optics

        options = OpticsValues(self.na, self.wavelength_nm, self.pixel_size_um)
        recording = OpticsValues(stack.na, stack.wavelength_nm, stack.pixel_size_um)
        return resolve_optics(options, recording, where=str(stack.path))

    def pixel_size_for(self, stack: RawStack) -> float | None:
        """Raw pixel size of ``stack``: the configured one, else the file's."""
        return self.pixel_size_um if self.pixel_size_um is not None else stack.pixel_size_um


@dataclass(frozen=True)
class GroupTask:
    """One unit of work: reconstruct group ``t`` of the file at ``path``."""

    path: str
    read: ReadOptions
    t: int
    config: ReconConfig
    optics: Any = None


@dataclass(frozen=True)
class GroupOutput:
    """The reconstruction of one group, with what made it."""

    t: int
    sr: np.ndarray
    estimate: dict[str, Any] | None
    reconstructor: str
    provider: str
    scale: int
    ood: list[str] | None = None  # reasons outside the training ranges; None: not checked
    fallback: bool | None = None  # reconstructed the fallback way; None: the method has none


# --------------------------------------------------------------------------------------------
# per-process caches (one per Dask worker process)

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


# --------------------------------------------------------------------------------------------
# executors


class _Future(Protocol):
    def result(self) -> Any: ...

    def cancel(self) -> Any: ...


class Executor(Protocol):
    """Runs `run_group` somewhere and hands back a future."""

    #: how many groups may be in flight at once
    window: int

    def submit(self, fn: Callable[[GroupTask], GroupOutput], task: GroupTask) -> _Future: ...


class _Deferred:
    """A future that computes when its result is asked for (single-machine path)."""

    def __init__(self, fn: Callable[[GroupTask], GroupOutput], task: GroupTask) -> None:
        self._fn = fn
        self._task = task

    def result(self) -> GroupOutput:
        return self._fn(self._task)

    def cancel(self) -> None:
        return None


class LocalExecutor:
    """Reconstruct in this process, one group at a time, in order."""

    window = 1

    def submit(self, fn: Callable[[GroupTask], GroupOutput], task: GroupTask) -> _Deferred:
        return _Deferred(fn, task)


class DaskExecutor:
    """Spread groups over a Dask distributed cluster.

    Workers read the input files themselves, so they must see the same paths (a shared or the
    local file system).
    """

    def __init__(self, client: Any, window: int | None = None) -> None:
        self.client = client
        if window is None:
            n_threads = sum(client.nthreads().values()) or 1
            window = 2 * n_threads
        self.window = max(1, int(window))

    def submit(self, fn: Callable[[GroupTask], GroupOutput], task: GroupTask) -> Any:
        return self.client.submit(fn, task, pure=False)


@contextlib.contextmanager
def dask_executor(address: str, dashboard_address: str | None = None) -> Iterator[DaskExecutor]:
    """Connect to a scheduler at ``address`` or, for ``"local"``, start a 2-worker LocalCluster.

    The local cluster listens on 127.0.0.1 only, and serves no dashboard unless
    ``dashboard_address`` asks for one (e.g. ``"127.0.0.1:8787"``).
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise MLSimError(
            "--dask needs the 'distributed' package; expected `pip install mlsim-live[dask]`"
        ) from exc
    if not log.isEnabledFor(logging.DEBUG):  # Dask's INFO chatter would bury our own lines
        for name in ("distributed", "distributed.http.proxy"):
            logging.getLogger(name).setLevel(logging.WARNING)
    cluster = None
    try:
        if address == "local":
            cluster = LocalCluster(
                n_workers=2,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",  # scheduler and workers on loopback only
                dashboard_address=dashboard_address,
            )
            client = Client(cluster)
        else:
            try:
                client = Client(address)  # timeout: distributed.comm.timeouts.connect
            except (OSError, TimeoutError, ValueError) as exc:
                raise MLSimError(
                    f"cannot connect to a Dask scheduler at {address!r} ({exc}); expected "
                    "a running scheduler address such as tcp://host:8786, or 'local'"
                ) from exc
        try:
            log.info("Dask: %d workers at %s", len(client.nthreads()), client.scheduler.address)
            yield DaskExecutor(client)
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()


# --------------------------------------------------------------------------------------------
# jobs


@dataclass(frozen=True)
class FileJob:
    """One input file and where its reconstruction goes."""

    input: Path
    output: Path

    @property
    def sidecar(self) -> Path:
        """The JSON beside the output: method, model, provider, estimated parameters."""
        return self.output.with_suffix(".json")


@dataclass
class FileOutcome:
    """What happened to one file: ``"done"``, ``"skipped"`` (output exists) or ``"failed"``."""

    job: FileJob
    status: str
    message: str = ""
    n_groups: int = 0
    unexpected: bool = False


def plan_jobs(
    inputs: Sequence[str | os.PathLike[str]], out_dir: Path
) -> tuple[list[FileJob], list[FileOutcome]]:
    """Expand files and folders (recursive ``*.tif``/``*.tiff``) into jobs.

    Files found inside a folder keep their sub-folder under ``out_dir``; given files go to
    ``out_dir/<stem>_sr.tif``. Inputs that are missing, empty folders, and inputs whose output
    another input already claims come back as failed outcomes.
    """
    from mlsim_live.io.tiff import find_tiffs

    out_dir = Path(out_dir)
    out_resolved = out_dir.resolve()
    jobs: list[FileJob] = []
    failed: list[FileOutcome] = []
    claimed: dict[Path, Path] = {}

    def add(src: Path, rel_dir: Path) -> None:
        output = out_dir / rel_dir / f"{output_stem(src)}{OUTPUT_SUFFIX}.tif"
        job = FileJob(input=src, output=output)
        key = output.resolve()
        if key in claimed:
            failed.append(
                FileOutcome(
                    job,
                    "failed",
                    f"{src}: output {output} is already claimed by {claimed[key]}; expected "
                    "inputs with distinct names (or separate runs)",
                )
            )
            return
        claimed[key] = src
        jobs.append(job)

    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = [f for f in find_tiffs(path) if out_resolved not in f.resolve().parents]
            if not found:
                failed.append(
                    FileOutcome(
                        FileJob(path, out_dir),
                        "failed",
                        f"{path}: folder holds no *.tif/*.tiff files; expected raw SIM stacks",
                    )
                )
            for f in found:
                add(f, f.parent.relative_to(path))
        elif path.exists():
            add(path, Path())
        else:
            failed.append(
                FileOutcome(
                    FileJob(path, out_dir),
                    "failed",
                    f"{path}: no such file or folder; expected an existing TIFF file or folder",
                )
            )
    return jobs, failed


# --------------------------------------------------------------------------------------------
# the run


@dataclass
class _Plan:
    """A file opened on the client: what its tasks need and what its output looks like."""

    stack: RawStack
    optics: Any
    pixel_size_um: float | None


@dataclass
class _Pipeline:
    """Submits groups of all files in order, a bounded window ahead, and yields them in order."""

    jobs: list[FileJob]
    read: ReadOptions
    config: ReconConfig
    executor: Any
    plans: dict[int, _Plan | MLSimError] = field(default_factory=dict)
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
                plan = _Plan(stack, optics, self.config.pixel_size_for(stack))
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

    def plan(self, i: int) -> _Plan | MLSimError:
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


def reconstruct_files(
    jobs: Sequence[FileJob],
    read: ReadOptions,
    config: ReconConfig,
    *,
    executor: LocalExecutor | DaskExecutor | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    trust: bool = False,
) -> list[FileOutcome]:
    """Reconstruct every job's input into its output TIFF and JSON sidecar.

    Files are processed in order; groups are streamed (read, reconstructed, written one at a
    time), with up to ``executor.window`` groups in flight. A file that fails leaves nothing
    behind and does not stop the run.

    Parameters
    ----------
    jobs : sequence of FileJob
        Inputs and outputs (see `plan_jobs`).
    read : ReadOptions
        How to read the inputs.
    config : ReconConfig
        Method, model and optics.
    executor : LocalExecutor or DaskExecutor, optional
        Where groups are reconstructed (default: this process).
    overwrite : bool
        Replace existing outputs; without it such files are skipped.
    progress : bool or None
        Show tqdm progress bars (None: only on a terminal).
    trust : bool
        Also write each reconstruction's trust map, overlay and figures beside it
        (``<stem>_trust.tif``, ``.png``, ``.json``; see `mlsim_live.trust`).

    Returns
    -------
    list of FileOutcome, one per job, in order.
    """
    from tqdm import tqdm

    from mlsim_live.io.atomic import remove_orphans

    executor = executor or LocalExecutor()
    jobs = list(jobs)
    outputs_by_folder: dict[Path, list[str]] = {}
    for job in jobs:
        for path in _outputs(job, trust):
            outputs_by_folder.setdefault(path.parent, []).append(path.name)
    for folder, names in outputs_by_folder.items():  # what killed runs left behind
        remove_orphans(folder, names)
    outcomes: list[FileOutcome | None] = [None] * len(jobs)
    todo: list[int] = []
    for i, job in enumerate(jobs):
        existing = [p for p in _outputs(job, trust) if p.exists()]
        if existing and not overwrite:
            log.debug("skipping %s: %s exists", job.input, existing[0])
            outcomes[i] = FileOutcome(
                job,
                "skipped",
                f"{job.input}: output {existing[0]} already exists; expected a new output "
                "or --overwrite",
            )
        else:
            todo.append(i)

    pipeline = _Pipeline([jobs[i] for i in todo], read, config, executor)
    disable = None if progress is None else not progress
    created_dirs: list[Path] = []
    try:
        with tqdm(total=len(todo), desc="files", unit="file", disable=disable) as files_bar:
            for k, i in enumerate(todo):
                job = jobs[i]
                files_bar.set_postfix_str(job.input.name, refresh=False)
                outcomes[i] = _reconstruct_one(
                    pipeline, k, job, read, config, overwrite, disable, created_dirs
                )
                if trust and outcomes[i].status == "done":
                    outcomes[i] = _write_trust(pipeline, k, job, config, overwrite)
                files_bar.update()
    finally:
        for folder in reversed(created_dirs):  # leave no empty output folders behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        if isinstance(executor, LocalExecutor):
            clear_caches()
        else:
            _close_stacks()
    return [o for o in outcomes if o is not None]


def _close_stacks() -> None:
    with _CACHE_LOCK:
        for stack in _STACKS.values():
            stack.close()
        _STACKS.clear()


def _reconstruct_one(
    pipeline: _Pipeline,
    k: int,
    job: FileJob,
    read: ReadOptions,
    config: ReconConfig,
    overwrite: bool,
    disable: bool | None,
    created_dirs: list[Path],
) -> FileOutcome:
    """Stream one file through the pipeline into its output; never raise for bad input."""
    from tqdm import tqdm

    from mlsim_live.io import write_json_atomic, write_tiff_atomic, write_tiff_stack_atomic

    plan = pipeline.plan(k)
    if isinstance(plan, MLSimError):
        return FileOutcome(job, "failed", str(plan))
    stack = plan.stack
    n_groups = stack.n_groups
    estimates: list[dict[str, Any] | None] = []
    ood: list[list[str] | None] = []
    fallbacks: list[bool | None] = []
    try:
        with tqdm(
            total=n_groups, desc=job.input.name, unit="group", leave=False, disable=disable
        ) as bar:
            first = pipeline.result(k, 0)
            estimates.append(first.estimate)
            ood.append(first.ood)
            fallbacks.append(first.fallback)
            bar.update()
            scale = first.scale
            out_pixel = plan.pixel_size_um / scale if plan.pixel_size_um is not None else None
            meta = {
                "source": str(job.input),
                "method": config.method,
                "reconstructor": first.reconstructor,
                "provider": first.provider,
                "model": config.model,
                "scale": scale,
            }
            _make_dirs(job.output.parent, created_dirs)
            if n_groups == 1:
                write_tiff_atomic(job.output, first.sr, out_pixel, meta, overwrite)
            else:

                def frames() -> Iterator[np.ndarray]:
                    yield first.sr
                    for t in range(1, n_groups):
                        out = pipeline.result(k, t)
                        estimates.append(out.estimate)
                        ood.append(out.ood)
                        fallbacks.append(out.fallback)
                        bar.update()
                        yield out.sr

                height, width = first.sr.shape
                write_tiff_stack_atomic(
                    job.output, frames(), (n_groups, height, width), out_pixel, meta, overwrite
                )
        ood_groups, ood_reasons = _ood_summary(ood)
        sidecar = {
            "input": str(job.input),
            "output": str(job.output),
            "method": config.method,
            "reconstructor": first.reconstructor,
            "provider": first.provider,
            "model": config.model,
            "scale": scale,
            "n_groups": n_groups,
            "raw_shape": list(stack.groups.shape),
            "raw_dtype": stack.dtype.name,
            "format": stack.format,
            "layout": stack.layout,
            "axes": stack.axes,
            "order": stack.order,
            "pixel_size_um": plan.pixel_size_um,
            "output_pixel_size_um": out_pixel,
            "optics": plan.optics.to_dict() if plan.optics is not None else None,
            "offset_adu": config.offset_adu,
            "estimates": estimates if any(e is not None for e in estimates) else None,
            "ood_groups": ood_groups,
            "ood_reasons": ood_reasons,
        }
        if any(f is not None for f in fallbacks):  # e.g. wiener-rcan where no pattern is found
            sidecar["fallback_groups"] = sum(bool(f) for f in fallbacks)
        try:
            write_json_atomic(job.sidecar, sidecar, overwrite=overwrite)
        except BaseException:
            job.output.unlink(missing_ok=True)  # no output without its sidecar
            raise
    except (MLSimError, OSError) as exc:
        pipeline.cancel(k)
        return FileOutcome(job, "failed", _message(exc, job.input))
    except Exception as exc:  # a bug must not stop a batch; report it like a failure
        pipeline.cancel(k)
        log.debug("unexpected error on %s", job.input, exc_info=True)
        return FileOutcome(
            job,
            "failed",
            f"{job.input}: unexpected {type(exc).__name__}: {one_line(exc, limit=300)}",
            unexpected=True,
        )
    if ood_groups:
        log.warning(
            "%s: %d of %d groups are outside the training range of the model: %s",
            job.input,
            ood_groups,
            n_groups,
            "; ".join(ood_reasons[:3]) + ("; ..." if len(ood_reasons) > 3 else ""),
        )
    log.info("wrote %s (%d group%s)", job.output, n_groups, "" if n_groups == 1 else "s")
    return FileOutcome(job, "done", n_groups=n_groups)


def _outputs(job: FileJob, trust: bool) -> tuple[Path, ...]:
    """The files a job writes."""
    if not trust:
        return job.output, job.sidecar
    return job.output, job.sidecar, *_trust_paths(job).all()


def _trust_paths(job: FileJob) -> Any:
    from mlsim_live.trust.output import TrustPaths

    stem = job.output.name.removesuffix(f"{OUTPUT_SUFFIX}.tif")
    return TrustPaths.beside(job.output.parent, stem)


def _write_trust(
    pipeline: _Pipeline, k: int, job: FileJob, config: ReconConfig, overwrite: bool
) -> FileOutcome:
    """The trust outputs of a finished file; a failure keeps its reconstruction and says why."""
    from mlsim_live.trust.output import trust_for_stack

    plan = pipeline.plan(k)
    assert not isinstance(plan, MLSimError)  # the file was reconstructed
    n_groups = plan.stack.n_groups
    try:
        trust_for_stack(
            plan.stack,
            job.output,
            _trust_paths(job),
            optics=plan.optics,
            offset_adu=config.offset_adu,
            pixel_size_um=plan.pixel_size_um / 2 if plan.pixel_size_um is not None else None,
            info={"method": config.method, "model": config.model},
            overwrite=overwrite,
        )
    except (MLSimError, OSError) as exc:
        return FileOutcome(
            job, "failed", f"trust map: {_message(exc, job.input)}", n_groups=n_groups
        )
    return FileOutcome(job, "done", n_groups=n_groups)


def _ood_summary(ood: Sequence[list[str] | None]) -> tuple[int | None, list[str]]:
    """Groups outside the training ranges (None: not checked) and their distinct reasons."""
    if all(o is None for o in ood):
        return None, []
    reasons: dict[str, None] = {}
    for group_reasons in ood:
        for reason in group_reasons or ():
            if len(reasons) < MAX_OOD_REASONS:
                reasons.setdefault(reason, None)
    return sum(bool(o) for o in ood), list(reasons)


def _make_dirs(folder: Path, created: list[Path]) -> None:
    missing = []
    p = folder
    while not p.exists():
        missing.append(p)
        p = p.parent
    folder.mkdir(parents=True, exist_ok=True)
    created.extend(reversed(missing))


def _message(exc: BaseException, path: Path) -> str:
    """``exc`` as one line; an OSError that does not name a file is prefixed with ``path``.

    Our own messages are kept whole (they name the file and say what is expected).
    """
    text = one_line(exc, limit=100_000 if isinstance(exc, MLSimError) else 500)
    if isinstance(exc, OSError) and str(path) not in text:
        text = f"{path}: {text}"
    return text
