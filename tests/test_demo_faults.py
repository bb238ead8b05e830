"""The demo under faults (issue 12): SIGINT/SIGTERM, a full disk for the SR file, and the core's
buffer sized to the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tifffile

from mlsim_live.live.demo import DemoRun, DemoSettings, configure_camera, demo_buffer_mb

pytestmark = pytest.mark.mm


def wait_for_hidden_sr(
    proc: subprocess.Popen, out: Path, name: str, min_bytes: int, timeout_s: float = 120
) -> None:
    """Wait until the SR file being written (a hidden temporary file beside ``out/name``)
    holds ``min_bytes``; kill the run and fail when it ends or the time runs out first."""
    deadline = time.monotonic() + timeout_s
    while not any(p.stat().st_size > min_bytes for p in out.glob(f".{name}.*.tmp")):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(proc.communicate(timeout=60))
        time.sleep(0.1)


def n_images(path: Path) -> int:
    from ndtiff import Dataset

    dataset = Dataset(str(path))
    try:
        return len(dataset.get_image_coordinates_list())
    finally:
        dataset.close()


def test_demo_buffer_is_sized_to_the_run(mm_core):
    configure_camera(mm_core, 64, exposure_ms=2.0)
    assert mm_core.get_circular_buffer_memory_footprint() == demo_buffer_mb(64) < 64
    configure_camera(mm_core, 512, exposure_ms=2.0)
    assert mm_core.get_circular_buffer_memory_footprint() == demo_buffer_mb(512) <= 64


def test_full_disk_for_the_sr_file_keeps_the_raw_frames(tmp_path, fake_reconstructor, full_disk):
    full_disk(2 * (64 * 64 * 4) + 2500)  # 2x SR pages of 32 x 32 frames: about 2 fit
    settings = DemoSettings(groups=6, size=32, out=tmp_path, policy="all", exposure_ms=2.0)
    demo = DemoRun(settings, reconstructor=fake_reconstructor())
    summary = demo.run()
    assert n_images(demo.dataset_path) == 54  # every raw frame saved
    assert summary["groups_reconstructed"] == 6
    (failure,) = summary["sink_failures"]
    assert failure["error"] == "no space left on device"
    written = tifffile.imread(summary["sr_file"]).shape[0]
    assert failure["groups_lost"] == 6 - written and written >= 1


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_demo_saves_raw_and_sr(tmp_path, sig):
    out = tmp_path / "out"
    args = [
        *("demo", "--headless", "--groups", "100000", "--size", "32", "--out", str(out)),
        *("--method", "widefield", "--exposure-ms", "2"),
    ]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlsim_live", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sr = out / "demo_1_sr.tif"
    wait_for_hidden_sr(proc, out, "demo_1_sr.tif", min_bytes=20000)
    assert not sr.exists()  # the one output rule: published only at the end
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err
    summary = json.loads((out / "demo_1_summary.json").read_text())
    assert summary["acquisition_ended"] == "interrupted" and summary["interrupted"] is True
    assert summary["raw_dataset"] == str(out / "demo_1")
    assert n_images(out / "demo_1") == summary["raw_frames"] == 9 * summary["groups_submitted"]
    with tifffile.TiffFile(sr) as tif:
        assert len(tif.pages) == summary["groups_reconstructed"] > 0
    assert (
        summary["groups_acquired"]
        == summary["groups_reconstructed"]
        + summary["groups_dropped"]
        + summary["errors"]
        + summary["groups_refused"]
    )
