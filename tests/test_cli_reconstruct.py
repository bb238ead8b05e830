"""`mlsim-live reconstruct`: layouts, T-stacks, metadata, skipping, batches and bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile
from onnx_models import write_conv_sr

from mlsim_live.cli import main
from mlsim_live.io import read_tiff_metadata, write_tiff_atomic
from mlsim_live.recon import make_reconstructor
from mlsim_live.sim import Camera, Optics, Pattern, Signal, SIMParams, simulate_group

SIZE = 64
PIXEL_UM = 0.08


def sim_groups(
    n_groups: int, size: int = SIZE, seed: int = 0, frequency_fraction: float = 0.85
) -> np.ndarray:
    """``(T, 9, size, size)`` uint16 simulated raw groups, angle-major."""
    params = SIMParams(
        optics=Optics(na=1.4, wavelength_nm=525, pixel_size_um=PIXEL_UM),
        pattern=Pattern(
            frequency_fraction=frequency_fraction, angle_offset_deg=10.0, modulation=0.8
        ),
        signal=Signal(peak_photons=500, background_photons=20),
        camera=Camera(kind="scmos", offset_adu=100),
    )
    return np.stack(
        [
            simulate_group(params, sample="filaments", size=size, seed=seed + t).raw
            for t in range(n_groups)
        ]
    )


def write_raw(path: Path, groups: np.ndarray, pixel_size_um: float | None = PIXEL_UM) -> Path:
    """A plain 9*T-frame stack (ImageJ TYX, calibrated)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_tiff_atomic(path, groups.reshape(-1, *groups.shape[-2:]), pixel_size_um)


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, list[str]]:
    """Run ``mlsim-live reconstruct ARGS``; return the exit code and the stderr lines."""
    code = main(["reconstruct", *args])
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture(scope="module")
def groups() -> np.ndarray:
    return sim_groups(3)


def expected_widefield(groups: np.ndarray) -> np.ndarray:
    reconstructor = make_reconstructor("widefield")
    return np.stack([reconstructor.reconstruct(g) for g in groups])


# ---------------------------------------------------------------------------------- outputs


def test_one_group_gives_a_2d_image_with_halved_pixel_size(
    tmp_path: Path, capsys: pytest.CaptureFixture, groups: np.ndarray
) -> None:
    raw = write_raw(tmp_path / "in" / "cell.tif", groups[:1])
    out = tmp_path / "out"
    code, err = run_cli(capsys, str(raw), "--out", str(out), "--method", "widefield")
    assert code == 0, err
    assert files_in(out) == [out / "cell_sr.json", out / "cell_sr.tif"]
    sr = tifffile.imread(out / "cell_sr.tif")
    assert sr.shape == (2 * SIZE, 2 * SIZE) and sr.dtype == np.float32
    np.testing.assert_array_equal(sr, expected_widefield(groups[:1])[0])
    meta = read_tiff_metadata(out / "cell_sr.tif")
    assert meta["pixel_size_um"] == pytest.approx(PIXEL_UM / 2)
    assert meta["metadata"]["method"] == "widefield"
    sidecar = json.loads((out / "cell_sr.json").read_text())
    assert sidecar["method"] == "widefield"
    assert sidecar["n_groups"] == 1
    assert sidecar["pixel_size_um"] == pytest.approx(PIXEL_UM)
    assert sidecar["output_pixel_size_um"] == pytest.approx(PIXEL_UM / 2)
    assert sidecar["provider"] and sidecar["reconstructor"]


def test_t_groups_give_a_t_stack(
    tmp_path: Path, capsys: pytest.CaptureFixture, groups: np.ndarray
) -> None:
    raw = write_raw(tmp_path / "movie.tif", groups)
    out = tmp_path / "out"
    code, err = run_cli(capsys, str(raw), "--out", str(out), "--method", "widefield")
    assert code == 0, err
    sr = tifffile.imread(out / "movie_sr.tif")
    assert sr.shape == (3, 2 * SIZE, 2 * SIZE)
    np.testing.assert_array_equal(sr, expected_widefield(groups))
    with tifffile.TiffFile(out / "movie_sr.tif") as tif:
        assert tif.series[0].axes == "TYX"
    assert read_tiff_metadata(out / "movie_sr.tif")["pixel_size_um"] == pytest.approx(0.04)


def test_pixel_size_option_overrides_and_fills_in(
    tmp_path: Path, capsys: pytest.CaptureFixture, groups: np.ndarray
) -> None:
    raw = write_raw(tmp_path / "nocal.tif", groups[:1], pixel_size_um=None)
    out = tmp_path / "out"
    assert run_cli(capsys, str(raw), "--out", str(out), "--method", "widefield")[0] == 0
    assert read_tiff_metadata(out / "nocal_sr.tif")["pixel_size_um"] is None
    code, _ = run_cli(
        capsys, str(raw), "--out", str(out), "--method", "widefield",
        "--pixel-size-um", "0.1", "--overwrite",
    )  # fmt: skip
    assert code == 0
    assert read_tiff_metadata(out / "nocal_sr.tif")["pixel_size_um"] == pytest.approx(0.05)


def test_wiener_sidecar_holds_the_estimated_parameters(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    raw = write_raw(tmp_path / "w.tif", sim_groups(2, size=96, seed=5))
    out = tmp_path / "out"
    code, err = run_cli(
        capsys, str(raw), "--out", str(out), "--method", "wiener",
        "--na", "1.4", "--wavelength-nm", "525",
    )  # fmt: skip
    assert code == 0, err
    sidecar = json.loads((out / "w_sr.json").read_text())
    assert sidecar["method"] == "wiener"
    assert sidecar["optics"] == {"na": 1.4, "wavelength_nm": 525.0, "pixel_size_um": PIXEL_UM}
    assert len(sidecar["estimates"]) == 2
    assert all(isinstance(e, dict) and e for e in sidecar["estimates"])
    assert tifffile.imread(out / "w_sr.tif").shape == (2, 192, 192)


def tiny_onnx_model(path: Path) -> Path:
    """A 1x1-conv 'super-resolution' ONNX model (9 -> 4 channels, DepthToSpace 2)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    return write_conv_sr(path, np.full((4, 9, 1, 1), 1.0 / 9.0, np.float32))


def test_rcan_counts_out_of_distribution_groups_with_one_warning_per_file(
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
    groups: np.ndarray,
) -> None:
    from mlsim_live.sim import PhysicsRanges

    model = tiny_onnx_model(tmp_path / "tiny.onnx")
    ranges = PhysicsRanges().to_dict()  # pattern frequency 0.70-0.95 of the cutoff
    model.with_suffix(".json").write_text(json.dumps({"scale": 2, "training_ranges": ranges}))
    far = write_raw(tmp_path / "in" / "far.tif", sim_groups(3, frequency_fraction=0.5))
    near = write_raw(tmp_path / "in" / "near.tif", groups)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        code, err = run_cli(
            capsys, str(far), str(near), "--out", str(out), "--method", "rcan",
            "--model", str(model), "--na", "1.4", "--wavelength-nm", "525",
        )  # fmt: skip
    assert code == 0, err
    far_sidecar = json.loads((out / "far_sr.json").read_text())
    assert far_sidecar["ood_groups"] == 3
    assert far_sidecar["ood_reasons"]
    assert all("pattern frequency" in r for r in far_sidecar["ood_reasons"])
    near_sidecar = json.loads((out / "near_sr.json").read_text())
    assert near_sidecar["ood_groups"] == 0 and near_sidecar["ood_reasons"] == []
    warnings = [r.getMessage() for r in caplog.records if "training range" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert str(far) in warnings[0] and "3 of 3 groups" in warnings[0]
    # a method without an OOD check records that nothing was checked
    code, err = run_cli(capsys, str(near), "--out", str(out / "wf"), "--method", "widefield")
    assert code == 0, err
    assert json.loads((out / "wf" / "near_sr.json").read_text())["ood_groups"] is None


@pytest.mark.parametrize("option", [["--na", "1.4"], ["--wavelength-nm", "525"]])
def test_lone_na_or_wavelength_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture, groups: np.ndarray, option: list[str]
) -> None:
    raw = write_raw(tmp_path / "a.tif", groups[:1])  # no NA/wavelength in its metadata
    out = tmp_path / "out"
    code, err = run_cli(capsys, str(raw), "--out", str(out), "--method", "wiener", *option)
    assert code == 2
    assert len(err) == 1, err
    assert str(raw) in err[0] and "expected both --na and --wavelength-nm or neither" in err[0]
    assert files_in(out) == []


def test_optics_options_complete_the_file_metadata() -> None:
    from types import SimpleNamespace

    from mlsim_live.batch import ReconConfig
    from mlsim_live.errors import MLSimError

    def stack(na: float | None = None, wavelength_nm: float | None = None) -> SimpleNamespace:
        return SimpleNamespace(
            path=Path("x.tif"), na=na, wavelength_nm=wavelength_nm, pixel_size_um=0.08
        )

    lone_na = ReconConfig(na=1.2)
    assert lone_na.optics_for(stack(wavelength_nm=600.0)) == Optics(1.2, 600.0, 0.08)
    with pytest.raises(MLSimError, match=r"x\.tif: .*--na and --wavelength-nm"):
        lone_na.optics_for(stack())
    # metadata alone that is incomplete: reconstruct without known optics, as before
    assert ReconConfig().optics_for(stack(na=1.4)) is None
    assert ReconConfig(na=1.3, wavelength_nm=520.0).optics_for(stack()) == Optics(1.3, 520.0, 0.08)


def test_unexpected_error_exits_1_as_the_help_says(
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    groups: np.ndarray,
) -> None:
    from mlsim_live.batch import pipeline

    raw = write_raw(tmp_path / "a.tif", groups[:1])
    out = tmp_path / "out"

    def broken(task: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(pipeline, "run_group", broken)  # what the run loop submits
    code, err = run_cli(capsys, str(raw), "--out", str(out), "--method", "widefield")
    assert code == 1
    assert len(err) == 1 and "unexpected RuntimeError: a bug" in err[0], err
    assert files_in(out) == []
    assert main(["reconstruct", "-h"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "1 when any file failed with an unexpected error" in help_text
    assert "otherwise 2 when any file was bad input" in help_text


# ---------------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("layout", ["phase-major", "imagej-cz", "ome-ap", "ome-cz", "zlib"])
def test_every_layout_gives_the_same_reconstruction(
    tmp_path: Path, capsys: pytest.CaptureFixture, groups: np.ndarray, layout: str
) -> None:
    by_axes = groups.reshape(3, 3, 3, SIZE, SIZE)  # T, A, P
    path = tmp_path / f"{layout}.tif"
    options: list[str] = []
    if layout == "phase-major":
        frames = by_axes.transpose(0, 2, 1, 3, 4).reshape(-1, SIZE, SIZE)
        tifffile.imwrite(path, frames, metadata=None)
        options = ["--order", "phase-major"]
    elif layout == "imagej-cz":  # ImageJ TZCYX: Z = phase, C = angle
        tifffile.imwrite(
            path, by_axes.transpose(0, 2, 1, 3, 4), imagej=True, metadata={"axes": "TZCYX"}
        )
        options = ["--angle-axis", "C", "--phase-axis", "Z"]
    elif layout == "ome-ap":
        path = tmp_path / "named.ome.tif"
        tifffile.imwrite(path, by_axes, metadata={"axes": "TAPYX"}, photometric="minisblack")
    elif layout == "ome-cz":  # OME TCZYX with C = angle, Z = phase
        path = tmp_path / "cz.ome.tif"
        tifffile.imwrite(path, by_axes, metadata={"axes": "TCZYX"}, photometric="minisblack")
        options = ["--angle-axis", "C", "--phase-axis", "Z"]
    else:
        tifffile.imwrite(path, groups.reshape(-1, SIZE, SIZE), metadata=None, compression="zlib")
    out = tmp_path / "out"
    code, err = run_cli(capsys, str(path), "--out", str(out), "--method", "widefield", *options)
    assert code == 0, err
    stem = path.name.split(".")[0]
    sr = tifffile.imread(out / f"{stem}_sr.tif")
    np.testing.assert_array_equal(sr, expected_widefield(groups))


# ------------------------------------------------------------------------ skipping, batches


def test_existing_output_is_skipped_unless_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture, groups: np.ndarray
) -> None:
    raw = write_raw(tmp_path / "a.tif", groups[:1])
    out = tmp_path / "out"
    assert run_cli(capsys, str(raw), "--out", str(out), "--method", "widefield")[0] == 0
    before = {p: p.read_bytes() for p in files_in(out)}
    raw.unlink()
    write_raw(raw, groups[1:2], pixel_size_um=0.1)  # a different input now

    code, err = run_cli(capsys, str(raw), "--out", str(out), "--method", "widefield")
    assert code == 2
    assert len(err) == 1 and "a_sr.tif already exists" in err[0] and "--overwrite" in err[0]
    assert {p: p.read_bytes() for p in files_in(out)} == before

    code, err = run_cli(capsys, str(raw), "--out", str(out), "--method", "widefield", "--overwrite")
    assert code == 0, err
    np.testing.assert_array_equal(
        tifffile.imread(out / "a_sr.tif"), expected_widefield(groups[1:2])[0]
    )
    assert read_tiff_metadata(out / "a_sr.tif")["pixel_size_um"] == pytest.approx(0.05)


def test_batch_skips_existing_and_processes_new_files(
    tmp_path: Path, capsys: pytest.CaptureFixture, groups: np.ndarray
) -> None:
    data = tmp_path / "data"
    write_raw(data / "a.tif", groups[:1])
    out = tmp_path / "out"
    assert run_cli(capsys, str(data), "--out", str(out), "--method", "widefield")[0] == 0
    write_raw(data / "b.tif", groups[1:2])
    code, err = run_cli(capsys, str(data), "--out", str(out), "--method", "widefield")
    assert code == 2
    assert err == [
        f"mlsim-live reconstruct: skipped: {data / 'a.tif'}: output {out / 'a_sr.tif'} "
        "already exists; expected a new output or --overwrite"
    ]
    assert (out / "b_sr.tif").is_file()


def test_folder_with_a_bad_file_processes_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture, groups: np.ndarray
) -> None:
    data = tmp_path / "data"
    write_raw(data / "a.tif", groups[:1])
    write_raw(data / "sub" / "b.tiff", groups[1:3])
    bad = data / "sub" / "bad.tif"
    tifffile.imwrite(bad, groups[0, :5], metadata=None)
    (data / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    code, err = run_cli(capsys, str(data), "--out", str(out), "--method", "widefield")
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith("mlsim-live reconstruct: error: ")
    assert str(bad) in err[0] and "found 5 frames" in err[0] and "multiple of 9" in err[0]
    assert files_in(out) == [
        out / "a_sr.json",
        out / "a_sr.tif",
        out / "sub" / "b_sr.json",
        out / "sub" / "b_sr.tif",
    ]
    assert tifffile.imread(out / "sub" / "b_sr.tif").shape == (2, 2 * SIZE, 2 * SIZE)


def test_failure_in_the_middle_of_a_stack_leaves_no_partial_output(
    tmp_path: Path, capsys: pytest.CaptureFixture, groups: np.ndarray
) -> None:
    raw = groups.astype(np.float32)
    raw[1, 3, 10, 10] = np.nan
    good = write_raw(tmp_path / "good.tif", groups[:1])
    bad = tmp_path / "bad.tif"
    tifffile.imwrite(bad, raw.reshape(-1, SIZE, SIZE), metadata=None)
    out = tmp_path / "out"
    code, err = run_cli(capsys, str(bad), str(good), "--out", str(out), "--method", "widefield")
    assert code == 2
    assert len(err) == 1 and str(bad) in err[0] and "group 1 has 1 NaN/Inf pixels" in err[0]
    assert files_in(out) == [out / "good_sr.json", out / "good_sr.tif"]


def test_outputs_inside_the_input_folder_are_not_read_back(
    tmp_path: Path, capsys: pytest.CaptureFixture, groups: np.ndarray
) -> None:
    write_raw(tmp_path / "a.tif", groups[:1])
    out = tmp_path / "sr"
    assert run_cli(capsys, str(tmp_path), "--out", str(out), "--method", "widefield")[0] == 0
    code, err = run_cli(
        capsys, str(tmp_path), "--out", str(out), "--method", "widefield", "--overwrite"
    )
    assert code == 0, err
    assert files_in(out) == [out / "a_sr.json", out / "a_sr.tif"]


def test_two_inputs_with_the_same_name(
    tmp_path: Path, capsys: pytest.CaptureFixture, groups: np.ndarray
) -> None:
    first = write_raw(tmp_path / "x" / "cell.tif", groups[:1])
    second = write_raw(tmp_path / "y" / "cell.tif", groups[1:2])
    out = tmp_path / "out"
    code, err = run_cli(capsys, str(first), str(second), "--out", str(out), "--method", "widefield")
    assert code == 2
    assert len(err) == 1 and str(second) in err[0] and "already claimed" in err[0]
    np.testing.assert_array_equal(
        tifffile.imread(out / "cell_sr.tif"), expected_widefield(groups[:1])[0]
    )


def test_default_method_without_a_model_is_wiener_with_a_warning(
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    groups: np.ndarray,
) -> None:
    import mlsim_live.paths

    monkeypatch.setattr(mlsim_live.paths, "has_default_model", lambda: False)
    raw = write_raw(tmp_path / "d.tif", groups[:1])
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        code, err = run_cli(
            capsys, str(raw), "--out", str(out), "--na", "1.4", "--wavelength-nm", "525"
        )
    assert code == 0, err
    assert "no default model installed; used --method wiener" in caplog.text
    assert json.loads((out / "d_sr.json").read_text())["method"] == "wiener"


# ------------------------------------------------------------------------------- bad input


def _bad_inputs(folder: Path, groups: np.ndarray) -> dict[str, tuple[Path, str]]:
    """name -> (path, a fragment the error line must contain)."""
    frames = groups.reshape(-1, SIZE, SIZE)
    folder.mkdir(parents=True, exist_ok=True)
    cases: dict[str, tuple[Path, str]] = {}

    def add(name: str, fragment: str, write) -> None:
        path = folder / f"{name}.tif"
        write(path)
        cases[name] = (path, fragment)

    add("ten_frames", "multiple of 9", lambda p: tifffile.imwrite(p, frames[:10], metadata=None))
    add("single_2d", "single 2D image", lambda p: tifffile.imwrite(p, frames[0], metadata=None))
    add(
        "4d_no_axes",
        "do not say which is angle",
        lambda p: tifffile.imwrite(p, groups, photometric="minisblack"),
    )
    add(
        "5d_no_axes",
        "do not say which is angle",
        lambda p: tifffile.imwrite(
            p, groups.reshape(3, 3, 3, SIZE, SIZE), photometric="minisblack"
        ),
    )
    add(
        "imagej_cz_no_axes",
        "--angle-axis/--phase-axis",
        lambda p: tifffile.imwrite(
            p, groups[0].reshape(3, 3, SIZE, SIZE), imagej=True, metadata={"axes": "ZCYX"}
        ),
    )
    add("empty", "not a readable TIFF", lambda p: p.write_bytes(b""))
    add("garbage", "not a readable TIFF", lambda p: p.write_bytes(b"\x00garbage" * 100))
    add("no_images", "contains no images", lambda p: p.write_bytes(b"II*\x00\x08\x00\x00\x00"))

    def truncated(p: Path) -> None:
        tifffile.imwrite(p, frames, metadata=None)
        blob = p.read_bytes()
        p.write_bytes(blob[: len(blob) // 2])

    add("truncated", "truncated", truncated)
    add(
        "complex",
        "pixel type complex64",
        lambda p: tifffile.imwrite(p, frames[:9].astype(np.complex64), metadata=None),
    )
    add(
        "bool",
        "pixel type bool",
        lambda p: tifffile.imwrite(p, frames[:9] > 120, metadata=None),
    )
    add(
        "constant",
        "constant",
        lambda p: tifffile.imwrite(p, np.full((9, SIZE, SIZE), 100, np.uint16), metadata=None),
    )

    def with_value(value: float):
        def write(p: Path) -> None:
            f = frames[:9].astype(np.float32)
            f[4, 3, 3] = value
            tifffile.imwrite(p, f, metadata=None)

        return write

    add("nan", "NaN/Inf", with_value(np.nan))
    add("inf", "NaN/Inf", with_value(np.inf))
    cases["missing"] = (folder / "missing.tif", "no such file")
    return cases


BAD_CASES = [
    "ten_frames", "single_2d", "4d_no_axes", "5d_no_axes", "imagej_cz_no_axes", "empty",
    "garbage", "no_images", "truncated", "complex", "bool", "constant", "nan", "inf", "missing",
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_exits_2_with_one_line_and_no_output(
    tmp_path: Path, capsys: pytest.CaptureFixture, groups: np.ndarray, case: str
) -> None:
    path, fragment = _bad_inputs(tmp_path, groups)[case]
    out = tmp_path / "out"
    code, err = run_cli(capsys, str(path), "--out", str(out), "--method", "widefield")
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith("mlsim-live reconstruct: error: ")
    assert str(path) in err[0] and fragment in err[0], err[0]
    assert "Traceback" not in err[0]
    assert files_in(out) == []


def test_every_bad_file_reported_in_one_batch(
    tmp_path: Path, capsys: pytest.CaptureFixture, groups: np.ndarray
) -> None:
    cases = _bad_inputs(tmp_path / "bad", groups)
    good = write_raw(tmp_path / "good" / "ok.tif", groups[:2])
    out = tmp_path / "out"
    code, err = run_cli(
        capsys, str(tmp_path / "bad"), str(good), str(cases["missing"][0]),
        "--out", str(out), "--method", "widefield",
    )  # fmt: skip
    assert code == 2
    assert len(err) == len(cases)
    for path, fragment in cases.values():
        assert any(str(path) in line and fragment in line for line in err), (path, err)
    assert files_in(out) == [out / "ok_sr.json", out / "ok_sr.tif"]


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--method", "wiener", "--model", "m.onnx"], "--model applies to the learned methods"),
        (["--method", "rcan", "--model", "nothere.onnx"], "no such file"),
        (["--method", "widefield", "--angle-axis", "C"], "expected both options or neither"),
        (["--method", "wiener", "--na", "7"], "NA 7.0 is out of range"),
    ],
)
def test_bad_options(
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    groups: np.ndarray,
    options: list[str],
    fragment: str,
) -> None:
    raw = write_raw(tmp_path / "a.tif", groups[:1])
    out = tmp_path / "out"
    code, err = run_cli(capsys, str(raw), "--out", str(out), *options)
    assert code == 2
    assert len(err) == 1 and fragment in err[0], err
    assert files_in(out) == []


def test_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    code, err = run_cli(capsys, str(tmp_path / "empty"), "--out", str(tmp_path / "out"))
    assert code == 2
    assert len(err) == 1 and "holds no *.tif/*.tiff files" in err[0]


def test_one_optics_rule_for_every_command() -> None:
    """resolve_optics: option over recording, a lone NA needs the recording's wavelength."""
    from mlsim_live.errors import MLSimError
    from mlsim_live.sim.optics import OpticsValues, resolve_optics

    recorded = OpticsValues(na=1.2, wavelength_nm=600.0, pixel_size_um=0.1)
    assert resolve_optics(OpticsValues(), None) is None
    assert resolve_optics(OpticsValues(), OpticsValues(na=1.2)) is None  # incomplete metadata
    optics = resolve_optics(OpticsValues(na=1.4), recorded)
    assert (optics.na, optics.wavelength_nm, optics.pixel_size_um) == (1.4, 600.0, 0.1)
    optics = resolve_optics(OpticsValues(pixel_size_um=0.07), recorded)
    assert optics.pixel_size_um == 0.07 and optics.na == 1.2
    assert resolve_optics(OpticsValues(1.4, 525.0), OpticsValues()) is None  # no pixel size
    with pytest.raises(MLSimError, match=r"^x\.tif: .*go together"):
        resolve_optics(OpticsValues(na=1.4), OpticsValues(pixel_size_um=0.1), where="x.tif")
    with pytest.raises(MLSimError, match="out of range"):
        resolve_optics(OpticsValues(na=7.0, wavelength_nm=525.0, pixel_size_um=0.1))
