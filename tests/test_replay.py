"""Replay: every input layout through the live pipeline, demo round trip, bad files, pacing."""

from __future__ import annotations

import json
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile
from onnx_models import write_conv_sr

from mlsim_live.cli import main
from mlsim_live.errors import MLSimError
from mlsim_live.live.pipeline import Pipeline
from mlsim_live.replay import (
    NDTiffSource,
    ReplayRun,
    ReplaySettings,
    TiffSource,
    open_source,
    replay,
)
from mlsim_live.replay import runner as replay_runner

SIZE = 32
INTERFACE_KEYS = (
    "groups_acquired",
    "groups_reconstructed",
    "groups_dropped",
    "errors",
    "latency_ms",
    "provider",
    "model",
)


class WeightedReconstructor:
    """Order-sensitive fake: frame k weighted by k + 1, summed, upsampled 2x (nearest)."""

    name = "weighted"
    provider = "numpy"
    scale = 2

    def __init__(self) -> None:
        self.calls = 0

    def reconstruct(self, group: np.ndarray) -> np.ndarray:
        self.calls += 1
        weights = np.arange(1, 10, dtype=np.float32)
        image = np.tensordot(weights, group.astype(np.float32), axes=1)
        return np.repeat(np.repeat(image, 2, axis=0), 2, axis=1).astype(np.float32)


def raw_groups(n_groups: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """``(T, 9, size, size)`` uint16 camera-like groups, angle-major."""
    rng = np.random.default_rng(seed)
    return (100 + rng.poisson(200.0, size=(n_groups, 9, size, size))).astype(np.uint16)


def expected_sr(groups: np.ndarray) -> np.ndarray:
    fake = WeightedReconstructor()
    return np.stack([fake.reconstruct(g) for g in groups])


def write_ndtiff(
    root: Path,
    groups: np.ndarray,
    *,
    axes=("time", "angle", "phase"),
    angle_values=(0, 1, 2),
    pixel_size_um: float | None = 0.1,
    extra_axes: dict | None = None,
    skip: set | None = None,
    extra_metadata: dict | None = None,
) -> Path:
    """Write ``groups`` as a Pycro-Manager NDTiff dataset (acquisition order: angle-major)."""
    from ndtiff import NDTiffDataset

    summary = {"PixelSize_um": 0.5}  # the frames' own PixelSize_um (when given) wins
    dataset = NDTiffDataset(str(root), name="rec", writable=True, summary_metadata=summary)
    time_axis, angle_axis, phase_axis = axes
    for t, group in enumerate(groups):
        for slot, frame in enumerate(group):
            if (t, slot) in (skip or ()):
                continue
            a, p = divmod(slot, 3)
            coords = {time_axis: t, angle_axis: angle_values[a], phase_axis: p}
            coords.update(extra_axes or {})
            metadata = {"Axes": coords}
            if pixel_size_um is not None:
                metadata["PixelSize_um"] = pixel_size_um
            metadata.update(extra_metadata or {})
            dataset.put_image(coords, frame, metadata)
    dataset.finish()
    path = Path(dataset.path)
    dataset.close()
    return path


def run_replay(tmp_path: Path, input_path: Path, **kwargs) -> tuple[dict, np.ndarray]:
    out = tmp_path / "out"
    settings = ReplaySettings(input=input_path, out=out, **kwargs)
    summary = ReplayRun(settings, reconstructor=WeightedReconstructor()).run()
    return summary, tifffile.imread(summary["sr_file"])


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def patched_reconstructor(monkeypatch):
    """CLI runs build the order-sensitive fake instead of a real reconstructor."""
    built: list[WeightedReconstructor] = []

    def make(settings, source):
        built.append(WeightedReconstructor())
        return built[-1]

    monkeypatch.setattr(replay_runner, "_make_reconstructor", make)
    return built


# ------------------------------------------------------------------------------------- layouts


def test_plain_angle_major(tmp_path: Path) -> None:
    groups = raw_groups(3)
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, groups.reshape(-1, SIZE, SIZE), metadata=None)
    summary, sr = run_replay(tmp_path, path)
    np.testing.assert_array_equal(sr, expected_sr(groups))
    assert summary["groups_reconstructed"] == 3 and summary["raw_frames"] == 27
    assert Path(summary["sr_file"]).name == "plain_sr.tif"
    assert files_in(tmp_path / "out") == ["plain_sr.tif", "plain_summary.json"]


def test_plain_phase_major(tmp_path: Path) -> None:
    groups = raw_groups(2)
    phase_major = groups.reshape(2, 3, 3, SIZE, SIZE).transpose(0, 2, 1, 3, 4)
    path = tmp_path / "pm.tif"
    tifffile.imwrite(path, phase_major.reshape(-1, SIZE, SIZE), metadata=None)
    _, sr = run_replay(tmp_path, path, order="phase-major")
    np.testing.assert_array_equal(sr, expected_sr(groups))
    _, wrong = run_replay(tmp_path / "default", path)  # read as angle-major: other images
    assert not np.array_equal(wrong, sr)


def test_tiff_source_yields_frames_in_file_order_with_axes(tmp_path: Path) -> None:
    groups = raw_groups(2)
    phase_major = groups.reshape(2, 3, 3, SIZE, SIZE).transpose(0, 2, 1, 3, 4)
    path = tmp_path / "pm.tif"
    tifffile.imwrite(path, phase_major.reshape(-1, SIZE, SIZE), metadata=None)
    source = open_source(path, order="phase-major")
    assert isinstance(source, TiffSource) and source.n_frames == 18
    frames = list(source)
    source.close()
    assert [m["frame_index"] for _, _, m in frames] == list(range(18))
    assert [(ax["angle"], ax["phase"]) for _, ax, _ in frames[:4]] == [
        (0, 0),
        (1, 0),
        (2, 0),
        (0, 1),
    ]
    assert frames[9][1] == {"time": 1, "angle": 0, "phase": 0}
    np.testing.assert_array_equal(frames[3][0], groups[0, 1])  # a0p1


def test_imagej_hyperstack_with_channel_and_z_for_angle_and_phase(tmp_path: Path) -> None:
    groups = raw_groups(2)
    hyper = groups.reshape(2, 3, 3, SIZE, SIZE).transpose(0, 2, 1, 3, 4)  # T, Z=phase, C=angle
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(
        path,
        hyper,
        imagej=True,
        metadata={"axes": "TZCYX", "unit": "um"},
        resolution=(1 / 0.09, 1 / 0.09),
    )
    summary, sr = run_replay(tmp_path, path, angle_axis="C", phase_axis="Z")
    np.testing.assert_array_equal(sr, expected_sr(groups))
    assert summary["source"]["format"] == "imagej"
    assert summary["pixel_size_um"] == pytest.approx(0.09)
    with pytest.raises(MLSimError, match="angle"):  # 5D without axis options is ambiguous
        open_source(path)


def test_ome_with_angle_and_phase_axes(tmp_path: Path) -> None:
    groups = raw_groups(3)
    path = tmp_path / "cells.ome.tif"
    tifffile.imwrite(
        path,
        groups.reshape(3, 3, 3, SIZE, SIZE),
        metadata={"axes": "TAPYX", "PhysicalSizeX": 0.065, "PhysicalSizeY": 0.065},
    )
    summary, sr = run_replay(tmp_path, path)
    np.testing.assert_array_equal(sr, expected_sr(groups))
    assert Path(summary["sr_file"]).name == "cells_sr.tif"
    assert summary["source"]["format"] == "ome"
    assert summary["pixel_size_um"] == pytest.approx(0.065)
    page = json.loads(tifffile.TiffFile(summary["sr_file"]).pages[0].description)
    assert page["pixel_size_um"] == pytest.approx(0.0325)


def test_ndtiff_dataset_with_recorded_axes(tmp_path: Path) -> None:
    groups = raw_groups(3)
    dataset = write_ndtiff(tmp_path / "raw", groups, pixel_size_um=0.08)
    source = open_source(dataset)
    assert isinstance(source, NDTiffSource)
    assert source.n_frames == 27 and source.frame_shape == (SIZE, SIZE)
    assert source.pixel_size_um == 0.08 and source.simulated is False
    first = next(iter(source))
    assert first[1] == {"time": 0, "angle": 0, "phase": 0} and first[2]["PixelSize_um"] == 0.08
    source.close()
    summary, sr = run_replay(tmp_path, dataset)
    np.testing.assert_array_equal(sr, expected_sr(groups))
    assert summary["source"]["format"] == "ndtiff" and summary["pixel_size_um"] == 0.08
    assert Path(summary["sr_file"]).name == f"{dataset.name}_sr.tif"
    # the index file stands for its dataset
    assert open_source(dataset / "NDTiff.index").n_frames == 27


def test_ndtiff_recorded_optics_reach_the_reconstructor(tmp_path: Path, monkeypatch) -> None:
    """NA and wavelength tagged in the frames (as the demo does) build the replay's optics;
    options given as a pair override them."""
    from mlsim_live.live.sim_optics import NA_TAG, WAVELENGTH_TAG

    tags = {NA_TAG: 1.2, WAVELENGTH_TAG: 600.0}
    dataset = write_ndtiff(tmp_path / "raw", raw_groups(1), extra_metadata=tags)
    with open_source(dataset) as source:
        assert (source.na, source.wavelength_nm, source.pixel_size_um) == (1.2, 600.0, 0.1)
    untagged = write_ndtiff(tmp_path / "plain", raw_groups(1))
    with open_source(untagged) as source:
        assert source.na is None and source.wavelength_nm is None
    seen = []

    def fake_make(method, *, model, optics, offset_adu):
        seen.append(optics)
        return WeightedReconstructor()

    import mlsim_live.recon

    monkeypatch.setattr(mlsim_live.recon, "make_stream_reconstructor", fake_make)
    ReplayRun(ReplaySettings(input=dataset, out=tmp_path / "a", method="wiener")).close()
    given = ReplaySettings(
        input=dataset, out=tmp_path / "b", method="wiener", na=1.4, wavelength_nm=525.0
    )
    ReplayRun(given).close()
    ReplayRun(ReplaySettings(input=untagged, out=tmp_path / "c", method="wiener")).close()
    assert [(o.na, o.wavelength_nm, o.pixel_size_um) for o in seen[:2]] == [
        (1.2, 600.0, 0.1),
        (1.4, 525.0, 0.1),
    ]
    assert seen[2] is None
    # one rule with reconstruct: a lone --na takes its wavelength from the recording...
    ReplayRun(ReplaySettings(input=dataset, out=tmp_path / "d", method="wiener", na=1.3)).close()
    assert (seen[3].na, seen[3].wavelength_nm) == (1.3, 600.0)
    # ...and is refused when the recording has none
    with pytest.raises(MLSimError, match="go together"):
        ReplayRun(ReplaySettings(input=untagged, out=tmp_path / "e", method="wiener", na=1.3))


def test_ndtiff_pixel_size_falls_back_to_summary_metadata(tmp_path: Path) -> None:
    dataset = write_ndtiff(tmp_path / "raw", raw_groups(1), pixel_size_um=None)
    with open_source(dataset) as source:
        assert source.pixel_size_um == 0.5  # summary metadata
    with open_source(dataset, pixel_size_um=0.07) as source:
        assert source.pixel_size_um == 0.07  # the option wins


def test_ndtiff_channel_and_z_standing_for_angle_and_phase(tmp_path: Path) -> None:
    groups = raw_groups(2)
    dataset = write_ndtiff(
        tmp_path / "raw",
        groups,
        axes=("time", "channel", "z"),
        angle_values=("ch0", "ch1", "ch2"),
        extra_axes={"position": 0},
    )
    with open_source(dataset, angle_axis="channel", phase_axis="z") as source:
        assert next(iter(source))[1] == {"time": 0, "position": 0, "angle": 0, "phase": 0}
    _, sr = run_replay(tmp_path, dataset, angle_axis="channel", phase_axis="z")
    np.testing.assert_array_equal(sr, expected_sr(groups))
    with pytest.raises(MLSimError, match="no 'angle' axis"):
        open_source(dataset)


# ------------------------------------------------------------------------------ summary, CLI


def test_summary_has_the_live_keys(tmp_path: Path, patched_reconstructor, capsys) -> None:
    groups = raw_groups(2)
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, groups.reshape(-1, SIZE, SIZE), metadata=None)
    out = tmp_path / "out"
    args = ["replay", str(path), "--out", str(out), "--headless", "--method", "widefield"]
    assert main(args) == 0, capsys.readouterr().err
    assert "2 reconstructed" in capsys.readouterr().out
    summary = json.loads((out / "plain_summary.json").read_text())
    live = Pipeline(WeightedReconstructor())
    live_keys = set(live.close())
    assert set(INTERFACE_KEYS) <= live_keys <= set(summary)
    assert summary["groups_acquired"] == summary["groups_reconstructed"] == 2
    assert summary["groups_dropped"] == 0 and summary["errors"] == 0
    assert summary["model"] == "weighted" and summary["provider"] == "numpy"
    assert summary["latency_ms"]["p50"] >= 0 and summary["policy"] == "all"
    assert summary["raw_frames"] == 18 and summary["raw_frames_per_s"] > 0
    assert summary["sr_file"] == str(out / "plain_sr.tif")
    np.testing.assert_array_equal(tifffile.imread(out / "plain_sr.tif"), expected_sr(groups))


def test_existing_outputs_need_overwrite(tmp_path: Path, patched_reconstructor, capsys) -> None:
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, raw_groups(1).reshape(-1, SIZE, SIZE), metadata=None)
    out = tmp_path / "out"
    out.mkdir()
    (out / "plain_summary.json").write_text("{}")
    args = ["replay", str(path), "--out", str(out), "--headless", "--method", "widefield"]
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert files_in(out) == ["plain_summary.json"]
    assert (out / "plain_summary.json").read_text() == "{}"
    assert main([*args, "--overwrite"]) == 0
    assert json.loads((out / "plain_summary.json").read_text())["groups_reconstructed"] == 1


def test_cli_rejects_bad_options(tmp_path: Path, capsys) -> None:
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, raw_groups(1).reshape(-1, SIZE, SIZE), metadata=None)
    base = ["replay", str(path), "--out", str(tmp_path / "out"), "--headless"]
    assert main([*base, "--method", "widefield", "--fps", "0"]) == 2
    assert main([*base, "--method", "widefield", "--na", "1.4"]) == 2
    assert main([*base, "--method", "wiener", "--model", str(path)]) == 2
    assert main([*base, "--method", "widefield", "--angle-axis", "C"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 4 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------ bad and odd inputs


def assert_one_error_line(err: str, *words: str) -> None:
    lines = [line for line in err.splitlines() if "mlsim-live replay: error:" in line]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], lines[0]


def cli_replay(path: Path, out: Path) -> int:
    return main(["replay", str(path), "--out", str(out), "--headless", "--method", "widefield"])


@pytest.mark.parametrize("fraction", [0.3, 0.95])
def test_truncated_tiff(tmp_path: Path, patched_reconstructor, capsys, fraction: float) -> None:
    full = tmp_path / "full.tif"
    tifffile.imwrite(full, raw_groups(2).reshape(-1, SIZE, SIZE), metadata=None)
    blob = full.read_bytes()
    path = tmp_path / "cut.tif"
    path.write_bytes(blob[: int(len(blob) * fraction)])
    assert cli_replay(path, tmp_path / "out") == 2
    assert_one_error_line(capsys.readouterr().err, "cut.tif", "truncated")
    assert not (tmp_path / "out").exists()


def test_corrupt_frames_mid_stream_leave_no_output(
    tmp_path: Path, patched_reconstructor, capsys
) -> None:
    path = tmp_path / "zlib.tif"
    tifffile.imwrite(path, raw_groups(3).reshape(-1, SIZE, SIZE), compression="zlib", metadata=None)
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[13].dataoffsets[0]
    blob = bytearray(path.read_bytes())
    blob[offset : offset + 64] = b"\xff" * 64  # scramble the deflate stream of frame 13
    path.write_bytes(bytes(blob))
    out = tmp_path / "out"
    out.mkdir()
    assert cli_replay(path, out) == 2
    assert_one_error_line(capsys.readouterr().err, "zlib.tif", "frames 9-17")
    assert patched_reconstructor[0].calls == 1  # group 0 was reconstructed before the error
    assert files_in(out) == []  # and its partial SR file is gone


def test_frame_count_not_a_multiple_of_nine(tmp_path: Path, capsys) -> None:
    path = tmp_path / "ten.tif"
    tifffile.imwrite(path, raw_groups(2).reshape(-1, SIZE, SIZE)[:10], metadata=None)
    assert cli_replay(path, tmp_path / "out") == 2
    assert_one_error_line(capsys.readouterr().err, "10 frames", "multiple of 9")


@pytest.mark.parametrize("damage", ["truncated_data", "missing_data", "garbage_index", "no_index"])
def test_broken_ndtiff(tmp_path: Path, patched_reconstructor, capsys, damage: str) -> None:
    dataset = write_ndtiff(tmp_path / "raw", raw_groups(2))
    data_file = next(dataset.glob("*.tif"))
    index = dataset / "NDTiff.index"
    if damage == "truncated_data":
        blob = data_file.read_bytes()
        data_file.write_bytes(blob[: len(blob) * 2 // 3])
    elif damage == "missing_data":
        data_file.unlink()
    elif damage == "garbage_index":
        blob = index.read_bytes()
        index.write_bytes(blob[:6] + b"\x07" * 40)
    else:
        index.unlink()
    assert cli_replay(dataset, tmp_path / "out") == 2
    expected = {
        "truncated_data": "truncated",
        "missing_data": "missing",
        "garbage_index": "NDTiff",
        "no_index": "NDTiff.index",
    }[damage]
    assert_one_error_line(capsys.readouterr().err, expected)
    assert not (tmp_path / "out").exists()


def test_incomplete_group_is_reported_not_fatal(tmp_path: Path) -> None:
    groups = raw_groups(2)
    dataset = write_ndtiff(tmp_path / "raw", groups, skip={(1, 8)})  # stopped one frame early
    summary, sr = run_replay(tmp_path, dataset)
    assert summary["raw_frames"] == 17
    assert summary["groups_reconstructed"] == 1 and summary["incomplete_groups"] == 1
    assert summary["incomplete"][0] == {"key": {"time": 1}, "missing": [[2, 2]]}
    np.testing.assert_array_equal(sr, expected_sr(groups[:1])[0])


# ------------------------------------------------------------------------- pacing, memory


def test_fps_paces_the_frames(tmp_path: Path) -> None:
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, raw_groups(2).reshape(-1, SIZE, SIZE), metadata=None)
    fps = 150.0
    summary, _ = run_replay(tmp_path, path, fps=fps)
    assert summary["replay_s"] >= 17 / fps  # 18 frames: 17 periods between the first and last
    assert summary["fps_requested"] == fps and summary["policy"] == "latest"
    assert summary["raw_frames"] == 18


def test_replay_function_paces_and_can_stop(fake_reconstructor) -> None:
    groups = raw_groups(30, size=16)
    frames = [
        (frame, {"time": t, "angle": k // 3, "phase": k % 3}, {})
        for t, group in enumerate(groups)
        for k, frame in enumerate(group)
    ]
    stop = threading.Event()

    class StopAfterFirst:
        def on_result(self, result) -> None:
            stop.set()

        def close(self) -> None:
            pass

    pipeline = Pipeline(fake_reconstructor(), sinks=[StopAfterFirst()], policy="all")
    started = time.monotonic()
    stats = replay(frames, pipeline, fps=400.0, stop=stop)
    assert time.monotonic() - started >= 8 / 400.0
    assert stats.stopped and 9 <= stats.frames_pushed < len(frames)
    assert pipeline.closed and pipeline.summary["groups_reconstructed"] >= 1


def test_memory_stays_flat_when_the_reconstructor_is_slow(tmp_path: Path, fake_reconstructor):
    """The reader waits for the worker: only a few groups are ever held, whatever the file."""
    n_groups, size = 60, 96
    path = tmp_path / "big.tif"
    rng = np.random.default_rng(0)
    with tifffile.TiffWriter(path) as tif:
        for _ in range(n_groups):
            frames = rng.integers(100, 400, (9, size, size), dtype=np.uint16)
            tif.write(frames, contiguous=True, metadata=None)
    file_bytes = path.stat().st_size
    settings = ReplaySettings(input=path, out=tmp_path / "out")
    run = ReplayRun(settings, reconstructor=fake_reconstructor(delay_s=0.004))
    tracemalloc.start()
    try:
        summary = run.run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary["groups_reconstructed"] == n_groups and summary["groups_dropped"] == 0
    assert peak < file_bytes / 4, (peak, file_bytes)


# ----------------------------------------------------------------------------- demo round trip


def conv_model(path: Path) -> Path:
    """A one-layer ONNX 'super-resolution' model: 3x3 conv to 4 channels, DepthToSpace 2."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(0)
    return write_conv_sr(path, (rng.standard_normal((4, 9, 3, 3)) * 0.2).astype(np.float32))


@pytest.mark.mm
@pytest.mark.slow
@pytest.mark.parametrize("method", ["rcan", "wiener", "widefield"])
def test_demo_then_replay_gives_the_same_reconstructions(tmp_path: Path, capsys, method: str):
    """The raw NDTiff of a live (demo) run replays to bit-identical SR images."""
    model_args = ["--model", str(conv_model(tmp_path / "conv.onnx"))] if method == "rcan" else []
    demo_out, replay_out = tmp_path / "demo", tmp_path / "replay"
    demo = ["demo", "--headless", "--groups", "3", "--size", "64", "--policy", "all"]
    assert main([*demo, "--out", str(demo_out), "--method", method, *model_args]) == 0
    live = json.loads((demo_out / "demo_1_summary.json").read_text())
    # The demo's reconstructor knew the simulated optics; the recording carries them, so the
    # replay needs no --na/--wavelength-nm to reconstruct alike.
    optics = live["simulation"]["params"]["optics"]
    with open_source(demo_out / "demo_1") as source:
        assert (source.na, source.wavelength_nm) == (optics["na"], optics["wavelength_nm"])
    args = ["replay", str(demo_out / "demo_1"), "--out", str(replay_out), "--headless"]
    args += ["--method", method, *model_args]
    assert main(args) == 0, capsys.readouterr().err
    replayed = json.loads((replay_out / "demo_1_summary.json").read_text())
    live_sr = tifffile.imread(demo_out / "demo_1_sr.tif")
    replay_sr = tifffile.imread(replay_out / "demo_1_sr.tif")
    assert live_sr.shape == replay_sr.shape == (3, 128, 128)
    np.testing.assert_array_equal(replay_sr, live_sr)
    for key in ("groups_acquired", "groups_reconstructed", "model", "provider", "pixel_size_um"):
        assert replayed[key] == live[key], key
    assert replayed["simulated"] is True and replayed["source"]["format"] == "ndtiff"
    assert set(INTERFACE_KEYS) <= set(replayed)


# --------------------------------------------------------------------------------------- viewer


@pytest.mark.qt
def test_viewer_screenshot_at_the_end(tmp_path: Path, patched_reconstructor, monkeypatch, capsys):
    pytest.importorskip("PyQt5")
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, raw_groups(2).reshape(-1, SIZE, SIZE), metadata=None)
    shot = tmp_path / "shot.png"
    args = ["replay", str(path), "--out", str(tmp_path / "out"), "--method", "widefield"]
    assert main([*args, "--screenshot", str(shot)]) == 0, capsys.readouterr().err
    assert shot.stat().st_size > 0
    assert (tmp_path / "out" / "plain_sr.tif").is_file()


def test_cli_stages_option_reaches_the_worker(tmp_path: Path, capsys) -> None:
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, raw_groups(2).reshape(-1, SIZE, SIZE), metadata=None)
    out = tmp_path / "out"
    base = ["replay", str(path), "--out", str(out), "--headless", "--method", "widefield"]
    assert main([*base, "--stages", "1"]) == 0, capsys.readouterr().err
    assert json.loads((out / "plain_summary.json").read_text())["stages"] == 1
    capsys.readouterr()
    # widefield has no prepare/finish stages: a one-line refusal, no output
    refused = tmp_path / "refused"
    args = ["replay", str(path), "--out", str(refused), "--headless", "--method", "widefield"]
    assert main([*args, "--stages", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stages" in err[0]
    assert not refused.exists() or not any(refused.glob("plain_*"))
    assert main([*base, "--stages", "3", "--overwrite"]) == 2
