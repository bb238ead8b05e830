"""pymmcore-plus as a live source: the frameReady handler, `demo --engine pymmcore-plus` and
`live --engine pymmcore-plus` against the real demo core (DemoCamera of mm-test-adapters)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile

pytest.importorskip("pymmcore_plus")
useq = pytest.importorskip("useq")

from mlsim_live.cli import main  # noqa: E402
from mlsim_live.live.plus_handler import (  # noqa: E402
    SIMFrameHandler,
    event_pattern,
    group_axes,
    sim_sequence,
)
from mlsim_live.live.processor import SIMProcessor  # noqa: E402

ADAPTERS = pytest.importorskip("mm_test_adapters")


def pattern_angle_deg(frame_a: np.ndarray, frame_b: np.ndarray, pixel_size_um: float) -> float:
    """Orientation (mod 180) of the strongest pattern peak of a phase difference (as in
    test_demo.py)."""
    diff = frame_a.astype(float) - frame_b.astype(float)
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(diff)))
    n_y, n_x = diff.shape
    ky = (np.arange(n_y) - n_y // 2)[:, None] / (n_y * pixel_size_um)
    kx = (np.arange(n_x) - n_x // 2)[None, :] / (n_x * pixel_size_um)
    spectrum[np.hypot(ky, kx) < 2.0] = 0  # keep the pattern band (~4.5 /um), drop the sample
    iy, ix = np.unravel_index(np.argmax(spectrum), spectrum.shape)
    return float(np.degrees(np.arctan2(ky[iy, 0], kx[0, ix])) % 180)


def sim_events(groups: int) -> list:
    """The events of `sim_sequence` (what pymmcore-plus runs), in acquisition order."""
    return list(sim_sequence(groups, "SIM", exposure_ms=1.0))


def test_pattern_comes_from_the_channel_preset_or_the_event_metadata():
    events = sim_events(2)
    assert [event_pattern(e, "SIM") for e in events[:9]] == [
        (a, p) for a in range(3) for p in range(3)
    ]
    assert group_axes(events[14], (1, 2)) == {"t": 1, "angle": 1, "phase": 2}
    assert event_pattern(events[5], "Other") is None  # a channel of another group
    fluorescence = useq.MDAEvent(channel={"config": "DAPI", "group": "Channel"})
    assert event_pattern(fluorescence) is None
    tagged = useq.MDAEvent(index={"t": 3}, metadata={"sim_angle": 2, "sim_phase": 0})
    assert event_pattern(tagged) == (2, 0)
    assert event_pattern(useq.MDAEvent(metadata={"sim_angle": 3, "sim_phase": 0})) is None


def test_handler_counts_every_frame_and_bounds_its_queue(fake_reconstructor):
    """Frames without a pattern and frames beyond the queue bound are counted, never waited
    for; the rest reach the pipeline."""
    gate = threading.Event()
    proc = SIMProcessor(reconstructor=fake_reconstructor(gate=gate), policy="all")
    frame = np.random.default_rng(0).integers(100, 200, (16, 16)).astype(np.uint16)
    handler = SIMFrameHandler(proc, pattern_group="SIM", max_queued_bytes=40 * frame.nbytes)
    events = sim_events(6)
    handler.frameReady(frame, useq.MDAEvent(channel={"config": "DAPI", "group": "Channel"}))
    for event in events:  # 54 frames while the first reconstruction is held at the gate
        handler.frameReady(frame, event, {"pixel_size_um": 0.1})
    stats = handler.stats
    assert stats.frames_ready == 55 and stats.frames_without_pattern == 1
    assert stats.frames_relayed + stats.frames_queued + stats.frames_not_relayed == 54
    assert stats.frames_not_relayed > 0  # the bound was hit while reconstruction was held
    gate.set()
    summary = handler.close(timeout=60)
    assert summary["frames_received"] == summary["frames_relayed"] == 54 - stats.frames_not_relayed
    assert summary["frames_ready"] == 55 and summary["pixel_size_um"] == 0.1
    assert summary["groups_acquired"] >= 1 and summary["errors"] == 0
    assert summary["groups_acquired"] == summary["groups_reconstructed"]  # policy all


@pytest.mark.mm
def test_cli_demo_plus_headless(tmp_path, capsys):
    """The issue's check: 5 reconstructions, 45 raw frames, 0 errors, the Pycro-Manager demo's
    summary keys, and raw frames that are the simulated SIM frames of each preset."""
    out = tmp_path / "out"
    args = ["demo", "--engine", "pymmcore-plus", "--headless", "--groups", "5", "--size", "64"]
    code = main([*args, "--out", str(out), "--method", "wiener", "--policy", "all"])
    assert code == 0, capsys.readouterr().err
    assert "SIMULATED" in capsys.readouterr().out
    summary = json.loads((out / "demo_1_summary.json").read_text())
    assert summary["groups_reconstructed"] == 5 and summary["errors"] == 0
    assert summary["raw_frames"] == 45 and summary["frames_relayed"] == 45
    assert summary["acquisition_ended"] == "completed" and summary["engine"] == "pymmcore-plus"
    assert summary["simulated"] is True and summary["pixel_size_um"] == 0.08
    assert summary["raw_dataset"] == str(out / "demo_1.ome.tif")
    assert tifffile.imread(out / "demo_1_sr.tif").shape == (5, 128, 128)
    with tifffile.TiffFile(out / "demo_1.ome.tif") as tif:
        series = tif.series[0]
        assert series.axes == "TCYX" and series.shape == (5, 9, 64, 64)
        raw = series.asarray()
        assert "A1P2" in tif.ome_metadata and 'PhysicalSizeX="0.08"' in tif.ome_metadata
    # the simulated optics' frames: phase steps of angle 1 differ by a pattern at angle 1
    angles_deg = np.degrees(summary["simulation"]["angles_rad"]) % 180
    measured = pattern_angle_deg(raw[4, 3], raw[4, 4], 0.08)
    assert abs(measured - angles_deg[1]) < 3.0 and abs(measured - angles_deg[0]) > 30.0
    # same keys as the Pycro-Manager demo
    pycro = tmp_path / "pycro"
    args = ["demo", "--headless", "--groups", "1", "--size", "32", "--out", str(pycro)]
    assert main([*args, "--method", "widefield"]) == 0, capsys.readouterr().err
    pycro_keys = set(json.loads((pycro / "demo_1_summary.json").read_text()))
    assert pycro_keys - set(summary) == set()


@pytest.mark.mm
def test_slow_reconstruction_never_holds_up_frame_delivery(tmp_path, fake_reconstructor):
    """With the reconstruction held at a gate and the pipeline's own queue full (so pushing
    into it waits), pymmcore-plus still delivers and saves all 45 frames."""
    from mlsim_live.live.acquire import AcquisitionSettings
    from mlsim_live.live.demo import configure_camera
    from mlsim_live.live.plus_acquire import PlusAcquisition, SnakeCaseCore
    from mlsim_live.live.plus_demo import start_plus_demo_core

    core = start_plus_demo_core()
    configure_camera(SnakeCaseCore(core), 64, 1.0)
    # fresh DemoCamera frames (its fast mode may repeat a dark frame of an earlier test)
    core.setProperty(core.getCameraDevice(), "FastImage", "0")
    gate = threading.Event()
    fake = fake_reconstructor(gate=gate)
    proc = SIMProcessor(
        reconstructor=fake, policy="all", max_waiting_bytes=1, out=tmp_path, name="slow_1"
    )
    settings = AcquisitionSettings(
        groups=5, exposure_ms=1.0, out=tmp_path, name="slow", pattern_group="SIM"
    )
    acquisition = PlusAcquisition(core, proc, settings, dataset_name="slow_1")
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(summary=acquisition.run()))
    thread.start()
    try:
        assert acquisition.handler.wait_for_frames(45, timeout=120)
        assert fake.calls <= 1 and proc.stats.run.groups_reconstructed == 0  # still held
        assert acquisition.handler.stats.frames_not_relayed == 0
    finally:
        gate.set()
        thread.join(120)
    summary = outcome["summary"]
    assert summary["groups_reconstructed"] == 5 and summary["groups_dropped"] == 0
    assert summary["raw_frames"] == 45 and summary["backpressure_waits"] > 0
    assert tifffile.imread(tmp_path / "slow_1.ome.tif").shape[:2] == (5, 9)


@pytest.mark.mm
def test_plus_demo_stop_ends_between_groups(tmp_path, fake_reconstructor):
    """An unbounded run stopped from another thread (as the viewer's close does) ends with
    whole groups only, every raw frame saved."""
    from mlsim_live.live.demo import DemoSettings
    from mlsim_live.live.plus_demo import PlusDemoRun

    settings = DemoSettings(groups=None, size=32, out=tmp_path, exposure_ms=1.0)
    demo = PlusDemoRun(settings, reconstructor=fake_reconstructor())
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(summary=demo.run()))
    thread.start()
    assert demo.acquisition.handler.wait_for_frames(2 * 9 + 4, timeout=120)
    demo.stop()
    thread.join(120)
    assert not thread.is_alive()
    summary = outcome["summary"]
    assert summary["acquisition_ended"] == "stopped"
    assert summary["groups_submitted"] >= 3
    assert summary["raw_frames"] == 9 * summary["groups_submitted"]
    assert summary["groups_acquired"] == summary["groups_submitted"]
    assert summary["incomplete_groups"] == 0
    with tifffile.TiffFile(Path(summary["raw_dataset"])) as tif:
        assert len(tif.pages) == summary["raw_frames"]


@pytest.mark.mm
def test_cli_live_plus_on_demo_hardware(tmp_path, capsys):
    """`live --engine pymmcore-plus` with a real configuration (DemoCamera frames, no optics)."""
    from mlsim_live.live.demo import demo_config_path

    args = ["live", "--engine", "pymmcore-plus", "--mm-app-path"]
    args += [ADAPTERS.device_adapter_path(), "--config", str(demo_config_path())]
    args += ["--pattern-group", "SIM", "--time-points", "2", "--exposure-ms", "2"]
    args += ["--out", str(tmp_path), "--method", "widefield", "--policy", "all", "--headless"]
    assert main(args) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "sim_1_summary.json").read_text())
    assert summary["groups_reconstructed"] == 2 and summary["raw_frames"] == 18
    assert summary["simulated"] is False and summary["engine"] == "pymmcore-plus"
    assert tifffile.imread(tmp_path / "sim_1.ome.tif").shape == (2, 9, 512, 512)


def test_cli_engine_errors(tmp_path, capsys):
    """A bad engine name, and what pymmcore-plus cannot do, exit 2 in one line before anything
    is touched."""
    assert main(["demo", "--engine", "micromanager", "--headless", "--out", str(tmp_path)]) == 2
    assert "--engine" in capsys.readouterr().err
    live = ["live", "--engine", "pymmcore-plus", "--out", str(tmp_path), "--headless"]
    assert main([*live, "--java", "--pattern-group", "SIM"]) == 2
    assert "--mm-app-path" in capsys.readouterr().err
    assert main([*live, "--mm-app-path", str(tmp_path), "--hardware-sequencing"]) == 2
    err = capsys.readouterr().err
    assert "--pattern-group" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


@pytest.mark.mm
@pytest.mark.slow
def test_interrupted_plus_demo_saves_whole_groups(tmp_path):
    """SIGINT ends the pymmcore-plus demo between groups: exit 130, every raw frame in the
    OME-TIFF, the SR file and summary written (a Ctrl-C during the wait once lost the run)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    args = ["demo", "--engine", "pymmcore-plus", "--headless", "--groups", "100000"]
    args += ["--size", "32", "--out", str(out), "--method", "widefield", "--exposure-ms", "2"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlsim_live", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".demo_1_sr.tif") for p in out.glob(".*")):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    summary = json.loads((out / "demo_1_summary.json").read_text())
    assert summary["acquisition_ended"] == "interrupted" and summary["incomplete_groups"] == 0
    assert summary["raw_frames"] == 9 * summary["groups_submitted"] > 0
    with tifffile.TiffFile(out / "demo_1.ome.tif") as tif:
        assert len(tif.pages) == summary["raw_frames"]
    assert tifffile.imread(out / "demo_1_sr.tif").shape[0] == summary["groups_reconstructed"]


@pytest.mark.mm
def test_plus_demo_raw_ome_tiff_replays(tmp_path, capsys):
    """The OME-TIFF that pymmcore-plus's writer saves (T x 9 channels named A<a>P<p>) replays
    to the demo's reconstructions."""
    demo_out, replay_out = tmp_path / "demo", tmp_path / "replay"
    args = ["demo", "--engine", "pymmcore-plus", "--headless", "--groups", "2", "--size", "64"]
    assert main([*args, "--out", str(demo_out), "--method", "wiener", "--policy", "all"]) == 0
    live = json.loads((demo_out / "demo_1_summary.json").read_text())
    optics = live["simulation"]["params"]["optics"]
    args = ["replay", str(demo_out / "demo_1.ome.tif"), "--out", str(replay_out), "--headless"]
    args += ["--method", "wiener", "--na", str(optics["na"])]
    args += ["--wavelength-nm", str(optics["wavelength_nm"])]
    assert main(args) == 0, capsys.readouterr().err
    replayed = json.loads((replay_out / "demo_1_summary.json").read_text())
    assert replayed["groups_reconstructed"] == 2 and replayed["errors"] == 0
    assert replayed["pixel_size_um"] == 0.08
    replay_sr = tifffile.imread(replay_out / "demo_1_sr.tif")
    assert replay_sr.shape == (2, 128, 128)
    np.testing.assert_array_equal(replay_sr, tifffile.imread(demo_out / "demo_1_sr.tif"))
