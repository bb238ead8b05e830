"""Which files a batch reconstructs and where their outputs go (`plan_jobs`), and what happened
to each (`FileOutcome`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlsim_live.io.tiff import output_stem

OUTPUT_SUFFIX = "_sr"


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
