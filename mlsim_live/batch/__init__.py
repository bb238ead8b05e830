"""Offline reconstruction of raw SIM files, on this machine or spread over a Dask cluster.

Both paths run the same function, `run_group`, on every (file, time point): it opens the file (once
per process), reads one group and reconstructs it with a per-process cached reconstructor, so each
Dask worker loads the model once and the outputs are identical to the single-machine path.

The package is split by concern: `config` (what is asked), `group` (what every process runs),
`executors` (where), `plan` (which files, which outputs), `pipeline` (groups in flight, in order)
and `run` (the loop that writes each file's outputs).
"""

from mlsim_live.batch.config import GroupOutput, GroupTask, ReadOptions, ReconConfig
from mlsim_live.batch.executors import DaskExecutor, Executor, LocalExecutor, dask_executor
from mlsim_live.batch.group import (
    cached_reconstructor,
    cached_stack,
    clear_caches,
    process_stats,
    run_group,
)
from mlsim_live.batch.plan import OUTPUT_SUFFIX, FileJob, FileOutcome, plan_jobs
from mlsim_live.batch.run import MAX_OOD_REASONS, reconstruct_files

__all__ = [
    "MAX_OOD_REASONS",
    "OUTPUT_SUFFIX",
    "DaskExecutor",
    "Executor",
    "FileJob",
    "FileOutcome",
    "GroupOutput",
    "GroupTask",
    "LocalExecutor",
    "ReadOptions",
    "ReconConfig",
    "cached_reconstructor",
    "cached_stack",
    "clear_caches",
    "dask_executor",
    "plan_jobs",
    "process_stats",
    "reconstruct_files",
    "run_group",
]
