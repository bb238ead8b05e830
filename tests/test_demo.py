"""Demo mode: DemoCamera + SIMULATED SIM optics through Pycro-Manager, and the demo/live CLIs."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from mlsim_live.cli import main
from mlsim_live.live.acquire import next_dataset_name, sim_group_events
from mlsim_live.live.demo import DemoRun, DemoSettings, configure_camera
from mlsim_live.live.sim_optics import (
    PATTERN_DEVICE,
    PATTERN_TAG,
    SIMULATED_TAG,
    SimulatedSIMOptics,
    parse_preset,
)

pytestmark = pytest.mark.mm


def read_dataset(path: Path):
    from ndtiff import Dataset

    return Dataset(str(path))


def pattern_angle_deg(frame_a: np.ndarray, frame_b: np.ndarray, pixel_size_um: float) -> float:
    """Orientation (mod 180) of the strongest high-frequency peak of a phase difference."""
    diff = frame_a.astype(float) - frame_b.astype(float)
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(diff)))
    n_y, n_x = diff.shape
    ky = (np.arange(n_y) - n_y // 2)[:, None] / (n_y * pixel_size_um)
    kx = (np.arange(n_x) - n_x // 2)[None, :] / (n_x * pixel_size_um)
    spectrum[np.hypot(ky, kx) < 2.0] = 0  # keep the pattern band (~4.5 /um), drop the sample
    iy, ix = np.unravel_index(np.argmax(spectrum), spectrum.shape)
    return float(np.degrees(np.arctan2(ky[iy, 0], kx[0, ix])) % 180)


def test_next_dataset_name(tmp_path):
    assert next_dataset_name(tmp_path / "missing", "demo") == "demo_1"
    (tmp_path / "demo_1").mkdir()
    (tmp_path / "demo_3_sr.tif").write_bytes(b"")
    (tmp_path / "other_7").mkdir()
    assert next_dataset_name(tmp_path, "demo") == "demo_4"


def test_group_events():
    events = sim_group_events(4, exposure_ms=5, pattern_group="SIM", interval_s=2.0)
    assert [e["config_group"][1] for e in events] == [
        f"A{a}P{p}" for a in range(3) for p in range(3)
    ]
    assert events[5]["axes"] == {"time": 4, "angle": 1, "phase": 2}
    assert events[0]["min_start_time"] == 8.0 and "min_start_time" not in events[1]
    assert all("config_group" not in e for e in sim_group_events(0))  # hardware sequencing
    assert parse_preset("A2P1") == (2, 1) and parse_preset("A3P0") is None


def test_simulated_frames_follow_the_pattern_device(mm_core):
    """The pattern comes from the device state, as on real hardware, not from the axes."""
    optics = SimulatedSIMOptics(size=128, seed=1, core=mm_core)
    angles = np.degrees(optics.describe()["angles_rad"]) % 180
    frames = {}
    for phase in (0, 1):
        mm_core.set_property(PATTERN_DEVICE, "Label", f"A1P{phase}")
        event = {"axes": {"time": 0, "angle": 0, "phase": phase}}  # axes disagree with device
        optics.post_hardware_hook(event)
        frame, metadata = optics(np.zeros((128, 128), np.uint16), {"Axes": event["axes"]})
        assert metadata[PATTERN_TAG] == f"A1P{phase}" and metadata[SIMULATED_TAG] is True
        assert frame.shape == (128, 128) and frame.dtype == np.uint16
        frames[phase] = frame
    measured = pattern_angle_deg(frames[0], frames[1], optics.pixel_size_um)
    assert abs(measured - angles[1]) < 3.0
    assert abs(measured - angles[0]) > 30.0


def test_demo_run_saves_simulated_raw_and_sr(tmp_path, fake_reconstructor):
    settings = DemoSettings(groups=3, size=64, out=tmp_path, policy="all", exposure_ms=2.0)
    demo = DemoRun(settings, reconstructor=fake_reconstructor())
    summary = demo.run()
    assert demo.name == "demo_1" and demo.dataset_path == tmp_path / "demo_1"
    assert summary["groups_reconstructed"] == 3 and summary["raw_frames"] == 27
    assert summary["simulated"] is True and summary["pixel_size_um"] == 0.08
    assert summary["simulation"]["params"]["optics"]["na"] == 1.4
    dataset = read_dataset(demo.dataset_path)
    assert len(dataset.get_image_coordinates_list()) == 27
    for a in range(3):
        for p in range(3):
            meta = dataset.read_metadata(time=2, angle=a, phase=p)
            assert meta[PATTERN_TAG] == f"A{a}P{p}"  # the SIM preset was set per event
            assert meta[SIMULATED_TAG] is True
    with tifffile.TiffFile(tmp_path / "demo_1_sr.tif") as tif:
        assert len(tif.pages) == 3
        assert json.loads(tif.pages[0].description)["simulated"] is True
    assert json.loads((tmp_path / "demo_1_summary.json").read_text())["raw_frames"] == 27
    # a second run never overwrites the first
    second = DemoRun(settings, reconstructor=fake_reconstructor())
    try:
        assert second.name == "demo_2"
    finally:
        second.processor.close()  # its worker thread must not outlive the test


def test_demo_stop_finishes_queued_groups(tmp_path, fake_reconstructor):
    """Stopping (as closing the viewer does) ends cleanly with whole groups saved."""
    settings = DemoSettings(groups=None, size=32, out=tmp_path, exposure_ms=2.0)
    demo = DemoRun(settings, reconstructor=fake_reconstructor())
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(summary=demo.run()))
    thread.start()
    deadline = time.monotonic() + 60
    while demo.processor.summary["groups_acquired"] < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    demo.stop()
    thread.join(60)
    assert not thread.is_alive()
    summary = outcome["summary"]
    assert summary["groups_submitted"] >= 3
    assert summary["raw_frames"] == 9 * summary["groups_submitted"]
    assert summary["groups_acquired"] == summary["groups_submitted"]
    assert summary["incomplete_groups"] == 0
    dataset = read_dataset(demo.dataset_path)
    assert len(dataset.get_image_coordinates_list()) == summary["raw_frames"]


def test_cli_demo_headless(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["demo", "--headless", "--groups", "5", "--out", str(out), "--size", "64"]
    code = main([*args, "--method", "wiener", "--policy", "all"])
    assert code == 0, capsys.readouterr().err
    assert "SIMULATED" in capsys.readouterr().out
    summary = json.loads((out / "demo_1_summary.json").read_text())
    for key in ("groups_acquired", "groups_reconstructed", "groups_dropped", "errors"):
        assert key in summary
    assert summary["groups_reconstructed"] == 5 and summary["errors"] == 0
    assert summary["provider"] and summary["model"].startswith("wiener")
    assert summary["latency_ms"]["p50"] > 0
    sr = tifffile.imread(out / "demo_1_sr.tif")
    assert sr.shape == (5, 128, 128) and np.isfinite(sr).all()
    assert len(read_dataset(out / "demo_1").get_image_coordinates_list()) == 45


def test_cli_demo_without_default_model_falls_back_to_wiener(tmp_path, capsys, caplog, monkeypatch):
    """No --method and no default model installed: the demo reconstructs with Wiener, as
    `reconstruct` and `replay` do, and says so."""
    from mlsim_live import paths

    monkeypatch.setattr(paths, "models_dir", lambda: tmp_path / "no_models")
    monkeypatch.setattr(paths, "has_default_model", lambda: False)
    out = tmp_path / "out"
    args = ["demo", "--headless", "--groups", "2", "--size", "64", "--out", str(out)]
    with caplog.at_level(logging.WARNING):
        assert main(args) == 0, capsys.readouterr().err
    assert "no default model" in caplog.text and "wiener" in caplog.text
    summary = json.loads((out / "demo_1_summary.json").read_text())
    assert summary["model"].startswith("wiener") and summary["groups_acquired"] == 2
    assert summary["groups_reconstructed"] + summary["groups_dropped"] == 2
    assert summary["errors"] == 0


def test_cli_live_checks_exposure_before_touching_the_core(tmp_path, capsys, mm_core):
    import mm_test_adapters

    from mlsim_live.live.demo import demo_config_path

    mm_core.set_exposure(7.0)
    args = ["live", "--mm-app-path", mm_test_adapters.device_adapter_path()]
    args += ["--config", str(demo_config_path()), "--pattern-group", "SIM"]
    args += ["--out", str(tmp_path), "--headless", "--method", "widefield"]
    assert main([*args, "--exposure-ms", "-5"]) == 2
    assert "exposure" in capsys.readouterr().err
    assert mm_core.get_exposure() == 7.0
    assert not list(tmp_path.iterdir())


def test_cli_demo_stages_option(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["demo", "--headless", "--groups", "2", "--size", "32", "--method", "widefield"]
    assert main([*args, "--out", str(out), "--stages", "1"]) == 0, capsys.readouterr().err
    assert json.loads((out / "demo_1_summary.json").read_text())["stages"] == 1
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "refused"), "--stages", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stages" in err[0]


def test_cli_demo_bad_input(tmp_path, capsys):
    assert main(["demo", "--headless", "--groups", "0", "--out", str(tmp_path)]) == 2
    assert main(["demo", "--headless", "--sample", "cats", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


@pytest.mark.parametrize("pattern", [["--pattern-group", "SIM"], ["--hardware-sequencing"]])
def test_cli_live_on_demo_hardware(tmp_path, capsys, mm_core, pattern):
    """`live` on a headless core with the demo hardware: plain DemoCamera frames, no optics."""
    import mm_test_adapters

    from mlsim_live.live.demo import demo_config_path

    configure_camera(mm_core, 32, 2.0)
    args = [
        "live",
        "--mm-app-path",
        mm_test_adapters.device_adapter_path(),
        "--config",
        str(demo_config_path()),
        *pattern,
        "--time-points",
        "2",
        "--exposure-ms",
        "2",
        "--out",
        str(tmp_path),
        "--method",
        "widefield",
        "--policy",
        "all",
        "--headless",
    ]
    assert main(args) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "sim_1_summary.json").read_text())
    assert summary["groups_reconstructed"] == 2 and summary["raw_frames"] == 18
    assert summary["simulated"] is False
    assert tifffile.imread(tmp_path / "sim_1_sr.tif").shape[0] == 2


def test_cli_live_rejects_bad_pattern_group(tmp_path, capsys, mm_core):
    import mm_test_adapters

    from mlsim_live.live.demo import demo_config_path

    args = ["live", "--mm-app-path", mm_test_adapters.device_adapter_path()]
    args += ["--config", str(demo_config_path()), "--pattern-group", "Channel"]
    assert main([*args, "--out", str(tmp_path), "--headless", "--method", "widefield"]) == 2
    assert "lacks presets" in capsys.readouterr().err


@pytest.mark.qt
def test_cli_demo_with_viewer_screenshot(tmp_path, capsys, monkeypatch):
    """The viewer path of `demo` on the offscreen platform: all groups shown, a screenshot made,
    the window closed at the end, and the raw data complete."""
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    out, shot = tmp_path / "out", tmp_path / "shot.png"
    args = ["demo", "--groups", "3", "--out", str(out), "--size", "64", "--method", "widefield"]
    assert main([*args, "--policy", "all", "--screenshot", str(shot)]) == 0, capsys.readouterr()
    assert shot.is_file() and shot.stat().st_size > 10_000
    summary = json.loads((out / "demo_1_summary.json").read_text())
    assert summary["groups_reconstructed"] == 3
    assert len(read_dataset(out / "demo_1").get_image_coordinates_list()) == 27


@pytest.mark.qt
def test_cli_demo_existing_screenshot_fails_before_acquiring(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    out, shot = tmp_path / "out", tmp_path / "shot.png"
    shot.write_bytes(b"earlier picture")
    args = ["demo", "--groups", "2", "--out", str(out), "--size", "64", "--method", "widefield"]
    assert main([*args, "--screenshot", str(shot)]) == 2
    err = capsys.readouterr().err
    assert "exists" in err and "Traceback" not in err
    assert shot.read_bytes() == b"earlier picture"
    assert not (out / "demo_1").exists()
