"""The batch run loop: `reconstruct_files` streams every file's groups into its SR TIFF and JSON
sidecar (and, when asked, its trust map), leaving nothing behind for a file that fails."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlsim_live.batch.config import GroupOutput, ReadOptions, ReconConfig
from mlsim_live.batch.executors import DaskExecutor, LocalExecutor
from mlsim_live.batch.group import clear_caches, close_stacks
from mlsim_live.batch.pipeline import FilePlan, GroupPipeline
from mlsim_live.batch.plan import OUTPUT_SUFFIX, FileJob, FileOutcome
from mlsim_live.errors import MLSimError, one_line

log = logging.getLogger(__name__)

#: At most this many distinct out-of-distribution reasons are kept in a sidecar.
MAX_OOD_REASONS = 20


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

    pipeline = GroupPipeline([jobs[i] for i in todo], read, config, executor)
    disable = None if progress is None else not progress
    created_dirs: list[Path] = []
    try:
        with tqdm(total=len(todo), desc="files", unit="file", disable=disable) as files_bar:
            for k, i in enumerate(todo):
                job = jobs[i]
                files_bar.set_postfix_str(job.input.name, refresh=False)
                outcome = _reconstruct_one(
                    pipeline, k, job, read, config, overwrite, disable, created_dirs
                )
                if trust and outcome.status == "done":
                    outcome = _write_trust(pipeline, k, job, config, overwrite)
                outcomes[i] = outcome
                files_bar.update()
    finally:
        for folder in reversed(created_dirs):  # leave no empty output folders behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        if isinstance(executor, LocalExecutor):
            clear_caches()
        else:
            close_stacks()
    return [o for o in outcomes if o is not None]


def _reconstruct_one(
    pipeline: GroupPipeline,
    k: int,
    job: FileJob,
    read: ReadOptions,
    config: ReconConfig,
    overwrite: bool,
    disable: bool | None,
    created_dirs: list[Path],
) -> FileOutcome:
    """Stream one file through the pipeline into its output; never raise for bad input."""
    from mlsim_live.io import write_json_atomic

    plan = pipeline.plan(k)
    if isinstance(plan, MLSimError):
        return FileOutcome(job, "failed", str(plan))
    n_groups = plan.stack.n_groups
    try:
        record = _write_sr(pipeline, k, job, plan, config, overwrite, disable, created_dirs)
        sidecar = _sidecar(job, plan, config, record)
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
    ood_groups, ood_reasons = sidecar["ood_groups"], sidecar["ood_reasons"]
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


@dataclass
class _FileRecord:
    """What the groups of one file reported besides their images, in group order."""

    first: GroupOutput
    output_pixel_size_um: float | None
    estimates: list[dict[str, Any] | None] = field(default_factory=list)
    ood: list[list[str] | None] = field(default_factory=list)
    fallbacks: list[bool | None] = field(default_factory=list)

    def add(self, out: GroupOutput) -> None:
        self.estimates.append(out.estimate)
        self.ood.append(out.ood)
        self.fallbacks.append(out.fallback)


def _write_sr(
    pipeline: GroupPipeline,
    k: int,
    job: FileJob,
    plan: FilePlan,
    config: ReconConfig,
    overwrite: bool,
    disable: bool | None,
    created_dirs: list[Path],
) -> _FileRecord:
    """Write the SR TIFF of file ``k`` (atomically, streamed group by group) and return what its
    groups reported."""
    from tqdm import tqdm

    from mlsim_live.io import write_tiff_atomic, write_tiff_stack_atomic

    n_groups = plan.stack.n_groups
    with tqdm(
        total=n_groups, desc=job.input.name, unit="group", leave=False, disable=disable
    ) as bar:
        first = pipeline.result(k, 0)
        scale = first.scale
        out_pixel = plan.pixel_size_um / scale if plan.pixel_size_um is not None else None
        record = _FileRecord(first, out_pixel)
        record.add(first)
        bar.update()
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
            return record

        def frames() -> Iterator[np.ndarray]:
            yield first.sr
            for t in range(1, n_groups):
                out = pipeline.result(k, t)
                record.add(out)
                bar.update()
                yield out.sr

        height, width = first.sr.shape
        write_tiff_stack_atomic(
            job.output, frames(), (n_groups, height, width), out_pixel, meta, overwrite
        )
    return record


def _sidecar(
    job: FileJob, plan: FilePlan, config: ReconConfig, record: _FileRecord
) -> dict[str, Any]:
    """The JSON beside a file's reconstruction: inputs, method, optics and per-group findings."""
    stack, first = plan.stack, record.first
    estimates = record.estimates
    ood_groups, ood_reasons = _ood_summary(record.ood)
    sidecar = {
        "input": str(job.input),
        "output": str(job.output),
        "method": config.method,
        "reconstructor": first.reconstructor,
        "provider": first.provider,
        "model": config.model,
        "scale": first.scale,
        "n_groups": stack.n_groups,
        "raw_shape": list(stack.groups.shape),
        "raw_dtype": stack.dtype.name,
        "format": stack.format,
        "layout": stack.layout,
        "axes": stack.axes,
        "order": stack.order,
        "pixel_size_um": plan.pixel_size_um,
        "output_pixel_size_um": record.output_pixel_size_um,
        "optics": plan.optics.to_dict() if plan.optics is not None else None,
        "offset_adu": config.offset_adu,
        "estimates": estimates if any(e is not None for e in estimates) else None,
        "ood_groups": ood_groups,
        "ood_reasons": ood_reasons,
    }
    fallbacks = record.fallbacks
    if any(f is not None for f in fallbacks):  # e.g. wiener-rcan where no pattern is found
        sidecar["fallback_groups"] = sum(bool(f) for f in fallbacks)
    return sidecar


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
    pipeline: GroupPipeline, k: int, job: FileJob, config: ReconConfig, overwrite: bool
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
