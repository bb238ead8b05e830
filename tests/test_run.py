"""One Run for every front end: typed run statistics, the summary JSON written from them, and the
one output rule for the SR file (a hidden temporary file, published at the end)."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from mlsim_live.live.processor import HookStats, SIMProcessor
from mlsim_live.live.stats import Figures, RunStats, RunSummary

SHAPE = (16, 12)
INTERFACE_KEYS = {
    "groups_acquired",
    "groups_reconstructed",
    "groups_dropped",
    "errors",
    "latency_ms",
    "provider",
    "model",
}


def push_groups(proc: SIMProcessor, times: range) -> None:
    rng = np.random.default_rng(0)
    for t in times:
        for i in range(9):
            frame = rng.integers(100, 200, SHAPE, dtype=np.uint16)
            proc(frame, {"Axes": {"time": t, "angle": i // 3, "phase": i % 3}})


def hidden(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp"))


def wait_until(predicate, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_live_sr_file_is_published_only_at_the_end(tmp_path, fake_reconstructor):
    proc = SIMProcessor(reconstructor=fake_reconstructor(), policy="all", out=tmp_path, name="c")
    push_groups(proc, range(2))
    assert wait_until(lambda: proc.stats.run.groups_reconstructed == 2)
    final = tmp_path / "c_sr.tif"
    assert not final.exists()
    (temp,) = hidden(tmp_path)
    assert temp.name.startswith(".c_sr.tif.")
    summary = proc.close()
    assert hidden(tmp_path) == []
    assert tifffile.imread(final).shape == (2, 2 * SHAPE[0], 2 * SHAPE[1])
    assert summary["sr_file"] == str(final) and summary["sr_groups_written"] == 2
    assert json.loads((tmp_path / "c_summary.json").read_text()) == summary


def test_summary_json_is_the_typed_summary(tmp_path, fake_reconstructor):
    proc = SIMProcessor(reconstructor=fake_reconstructor(), policy="all", out=tmp_path, name="t")
    proc.add_section(Figures({"note": "from a front end"}))
    push_groups(proc, range(3))
    typed = proc.finish(timeout=30)
    assert isinstance(typed, RunSummary) and isinstance(typed.run, RunStats)
    assert typed.run.groups_reconstructed == 3 and typed.run.latency_ms.p50 is not None
    hook = typed.section(HookStats)
    assert hook is not None and hook.hook_calls == 27 and hook.hook_failures == 0
    saved = json.loads((tmp_path / "t_summary.json").read_text())
    assert saved == typed.to_dict() == dict(typed) == proc.summary
    assert INTERFACE_KEYS <= set(saved)
    assert saved["note"] == "from a front end"
    assert list(saved)[: len(typed.run.to_dict())] == list(typed.run.to_dict())
    assert proc.finish() is typed  # idempotent: the first summary, not a new one
    with pytest.raises(dataclasses.FrozenInstanceError):
        typed.run.errors = 1  # type: ignore[misc]


def test_a_run_without_results_leaves_no_sr_file(tmp_path, fake_reconstructor):
    proc = SIMProcessor(reconstructor=fake_reconstructor(), out=tmp_path, name="none")
    summary = proc.close()
    assert summary["sr_file"] is None and summary["sr_groups_written"] == 0
    assert not (tmp_path / "none_sr.tif").exists() and hidden(tmp_path) == []
    assert (tmp_path / "none_summary.json").is_file()


def test_full_disk_publishes_the_pages_written(tmp_path, fake_reconstructor, full_disk):
    """Disk full during a live run: the pages before the failure are published, readable, and
    the summary counts the groups the SR file lost."""
    page = 2 * SHAPE[0] * 2 * SHAPE[1] * 4
    full_disk(2 * page + 2500)
    proc = SIMProcessor(reconstructor=fake_reconstructor(), policy="all", out=tmp_path, name="f")
    push_groups(proc, range(6))
    summary = proc.close(timeout=30)
    written = summary["sr_groups_written"]
    assert 1 <= written < 6
    assert tifffile.imread(tmp_path / "f_sr.tif").shape[0] == written
    (failure,) = summary["sink_failures"]
    assert failure["error"] == "no space left on device"
    assert failure["groups_lost"] == 6 - written
    assert hidden(tmp_path) == []


def test_polling_the_running_summary_is_cheap(fake_reconstructor):
    """policy and waiting are plain properties; a status bar polling the summary recomputes no
    percentiles between groups."""
    proc = SIMProcessor(reconstructor=fake_reconstructor(), policy="all")
    push_groups(proc, range(2))
    assert wait_until(lambda: proc.pipeline.stats.groups_reconstructed == 2)
    assert proc.pipeline.policy == "all" and proc.pipeline.waiting == 0
    proc.summary  # noqa: B018 - computes once after the last change
    computed = proc.pipeline.latency.computations
    for _ in range(50):
        assert proc.summary["groups_reconstructed"] == 2
    assert proc.pipeline.latency.computations == computed
    proc.close()


KILLED_RUN = """
import os, signal, sys, time
from pathlib import Path
import numpy as np
from mlsim_live.live.processor import SIMProcessor

proc = SIMProcessor(method="widefield", policy="all", out=sys.argv[1], name="demo_1")
rng = np.random.default_rng(0)
for i in range(9):
    frame = rng.integers(100, 200, (32, 32), dtype=np.uint16)
    proc(frame, {"Axes": {"time": 0, "angle": i // 3, "phase": i % 3}})
deadline = time.monotonic() + 60
while not any(p.stat().st_size for p in Path(sys.argv[1]).glob(".demo_1_sr.tif.*.tmp")):
    assert time.monotonic() < deadline and not proc.stats.run.errors, "no SR page in 60 s"
    time.sleep(0.02)
os.kill(os.getpid(), signal.SIGKILL)  # killed mid-run: the hidden SR file stays behind
"""


def test_a_new_run_removes_the_orphans_of_killed_runs_of_other_names(
    tmp_path, fake_reconstructor, caplog
):
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(tmp_path)], env=env, capture_output=True, timeout=120
    )
    assert killed.returncode == -9, killed.stderr
    (orphan,) = hidden(tmp_path)
    assert orphan.name.startswith(".demo_1_sr.tif.")
    assert not (tmp_path / "demo_1_sr.tif").exists()

    with caplog.at_level("WARNING", logger="mlsim_live.io"):
        proc = SIMProcessor(
            reconstructor=fake_reconstructor(), policy="all", out=tmp_path, name="demo_2"
        )
        assert hidden(tmp_path) == []  # the orphan went at start, before the first frame
    assert f"removed 1 temporary file(s) left by an interrupted run in {tmp_path}" in caplog.text
    push_groups(proc, range(1))
    summary = proc.close()
    assert summary["sr_file"] == str(tmp_path / "demo_2_sr.tif")
    assert hidden(tmp_path) == []
