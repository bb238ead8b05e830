"""Reading raw SIM stacks in every layout, rejecting bad files, and atomic TIFF/JSON writing."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile

from mlsim_live.errors import MLSimError
from mlsim_live.io import (
    iter_groups,
    read_raw_stack,
    read_tiff_metadata,
    write_json_atomic,
    write_tiff_atomic,
    write_tiff_stack_atomic,
)
from mlsim_live.io.atomic import host_tag, remove_orphans, temp_path_for
from mlsim_live.sim import Camera, Optics, Pattern, Signal, SIMParams, simulate_group

SIZE = 64


def sim_groups(n_groups: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """``(T, 9, size, size)`` uint16 simulated raw groups, angle-major."""
    params = SIMParams(
        optics=Optics(na=1.4, wavelength_nm=525, pixel_size_um=0.08),
        pattern=Pattern(frequency_fraction=0.85, angle_offset_deg=10.0, modulation=0.8),
        signal=Signal(peak_photons=500, background_photons=20),
        camera=Camera(kind="scmos", offset_adu=100),
    )
    return np.stack(
        [
            simulate_group(params, sample="beads", size=size, seed=seed + t).raw
            for t in range(n_groups)
        ]
    )


@pytest.fixture(scope="module")
def groups() -> np.ndarray:
    return sim_groups(3)


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


def read_all(path: Path, **kwargs) -> tuple[np.ndarray, object]:
    with read_raw_stack(path, **kwargs) as stack:
        return np.asarray(stack.groups), stack


# ------------------------------------------------------------------------------------- layouts


def test_plain_angle_major(tmp_path: Path, groups: np.ndarray) -> None:
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, groups.reshape(-1, SIZE, SIZE), metadata=None)
    data, stack = read_all(path)
    assert stack.groups.shape == groups.shape
    assert stack.layout == "plain" and stack.order == "angle-major"
    assert stack.dtype == np.uint16
    np.testing.assert_array_equal(data, groups)


def test_plain_phase_major(tmp_path: Path, groups: np.ndarray) -> None:
    # file order p0a0 p0a1 p0a2 p1a0 ...
    phase_major = groups.reshape(3, 3, 3, SIZE, SIZE).transpose(0, 2, 1, 3, 4)
    path = tmp_path / "pm.tif"
    tifffile.imwrite(path, phase_major.reshape(-1, SIZE, SIZE), metadata=None)
    data, _ = read_all(path, order="phase-major")
    np.testing.assert_array_equal(data, groups)
    wrong, _ = read_all(path)  # the default order reads the frames as they are
    assert not np.array_equal(wrong, groups)


def test_imagej_frames_only(tmp_path: Path, groups: np.ndarray) -> None:
    path = tmp_path / "ij_t.tif"
    tifffile.imwrite(path, groups.reshape(-1, SIZE, SIZE), imagej=True, metadata={"axes": "TYX"})
    data, stack = read_all(path)
    assert stack.format == "imagej"
    np.testing.assert_array_equal(data, groups)


def test_imagej_hyperstack_channel_and_z_stand_for_angle_and_phase(
    tmp_path: Path, groups: np.ndarray
) -> None:
    # TZCYX with Z = phase and C = angle
    hyper = groups.reshape(3, 3, 3, SIZE, SIZE).transpose(0, 2, 1, 3, 4)
    path = tmp_path / "ij_tzc.tif"
    tifffile.imwrite(path, hyper, imagej=True, metadata={"axes": "TZCYX"})
    data, stack = read_all(path, angle_axis="C", phase_axis="z")
    assert stack.layout == "axes" and stack.format == "imagej"
    np.testing.assert_array_equal(data, groups)
    with pytest.raises(MLSimError, match=r"ij_tzc.tif: found 5D data .* angle"):
        read_raw_stack(path)


def test_ome_with_named_angle_and_phase_axes(tmp_path: Path, groups: np.ndarray) -> None:
    path = tmp_path / "named.ome.tif"
    tifffile.imwrite(
        path,
        groups.reshape(3, 3, 3, SIZE, SIZE),
        metadata={"axes": "TAPYX", "PhysicalSizeX": 0.065, "PhysicalSizeY": 0.065},
    )
    data, stack = read_all(path)
    assert stack.format == "ome" and stack.layout == "axes"
    assert stack.pixel_size_um == pytest.approx(0.065)
    np.testing.assert_array_equal(data, groups)


def test_ome_phase_first_axes(tmp_path: Path, groups: np.ndarray) -> None:
    # T, C standing for phase, A for angle: axes by option, in any order
    data5 = groups.reshape(3, 3, 3, SIZE, SIZE).transpose(0, 2, 1, 3, 4)  # T, P, A
    path = tmp_path / "tca.ome.tif"
    tifffile.imwrite(path, data5, metadata={"axes": "TCAYX"})
    data, _ = read_all(path, angle_axis="A", phase_axis="C")
    np.testing.assert_array_equal(data, groups)


def test_ome_channel_and_z_with_two_other_axes_flattened(tmp_path: Path) -> None:
    g = sim_groups(4)  # 2 time points x 2 other groups, each 3 angles (C) x 3 phases (Z)
    hyper = g.reshape(2, 2, 3, 3, SIZE, SIZE).transpose(0, 1, 3, 2, 4, 5)  # T, ?, Z=p, C=a
    hyper = hyper.reshape(2 * 2, 3, 3, SIZE, SIZE)
    path = tmp_path / "tzc.ome.tif"
    tifffile.imwrite(path, hyper, metadata={"axes": "TZCYX"})
    data, stack = read_all(path, angle_axis="C", phase_axis="Z")
    assert stack.n_groups == 4
    np.testing.assert_array_equal(data, g)


def test_compressed_pages_are_read_page_by_page(tmp_path: Path, groups: np.ndarray) -> None:
    path = tmp_path / "zlib.tif"
    tifffile.imwrite(path, groups.reshape(-1, SIZE, SIZE), compression="zlib", metadata=None)
    data, _ = read_all(path)
    np.testing.assert_array_equal(data, groups)


def test_big_endian(tmp_path: Path, groups: np.ndarray) -> None:
    path = tmp_path / "be.tif"
    tifffile.imwrite(path, groups.reshape(-1, SIZE, SIZE), byteorder=">", metadata=None)
    data, stack = read_all(path)
    assert stack.dtype == np.dtype("uint16")
    np.testing.assert_array_equal(data, groups)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int32", "float32", "float64"])
def test_any_numeric_dtype(tmp_path: Path, groups: np.ndarray, dtype: str) -> None:
    raw = (groups[:1] // 4).astype(dtype)
    path = tmp_path / f"{dtype}.tif"
    tifffile.imwrite(path, raw.reshape(-1, SIZE, SIZE), metadata=None)
    with read_raw_stack(path) as stack:
        assert stack.dtype == np.dtype(dtype)
        group = stack.group(0)
    assert group.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(group, raw[0])


def test_non_square_frames(tmp_path: Path, groups: np.ndarray) -> None:
    raw = groups[:2, :, :48, :]
    path = tmp_path / "rect.tif"
    tifffile.imwrite(path, raw.reshape(-1, 48, SIZE), metadata=None)
    data, stack = read_all(path)
    assert stack.frame_shape == (48, SIZE)
    np.testing.assert_array_equal(data, raw)


def test_iter_groups_streams_one_group_at_a_time(tmp_path: Path) -> None:
    n_groups = 60
    raw = np.random.default_rng(0).integers(100, 4000, (n_groups * 9, SIZE, SIZE), np.uint16)
    path = tmp_path / "long.tif"
    tifffile.imwrite(path, raw, metadata=None)  # 4.4 MB
    group_bytes = 9 * SIZE * SIZE * 2
    with read_raw_stack(path) as stack:
        tracemalloc.start()
        seen = []
        for t, group in iter_groups(stack):
            np.testing.assert_array_equal(group, raw[9 * t : 9 * t + 9])
            seen.append(t)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert seen == list(range(n_groups))
    assert peak < 6 * group_bytes, f"peak {peak} B while streaming {raw.nbytes} B"


def test_group_slices(tmp_path: Path, groups: np.ndarray) -> None:
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, groups.reshape(-1, SIZE, SIZE), metadata=None)
    with read_raw_stack(path) as stack:
        np.testing.assert_array_equal(stack.groups[1:3], groups[1:3])
        np.testing.assert_array_equal(stack.groups[-1], groups[-1])
        np.testing.assert_array_equal(stack.groups[0, 4], groups[0, 4])
        with pytest.raises(IndexError):
            stack.groups[3]


@pytest.mark.parametrize(
    "key",
    [
        (slice(0, 2), 4),  # frame 4 of groups 0 and 1 (the 4 went to the group axis)
        (slice(1, 3), slice(0, 3), slice(2, 5)),
        (slice(None, None, -1), 8, 0),
        (slice(0, 3), [0, 8]),
        ([2, 0],),
        ([True, False, True], 1),
        (-2, slice(3, 6), 7),
        (Ellipsis, 3),
        (slice(0, 2), Ellipsis, 5),
        (),
    ],
)
def test_group_array_indexes_like_numpy(tmp_path: Path, groups: np.ndarray, key: tuple) -> None:
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, groups.reshape(-1, SIZE, SIZE), metadata=None)
    with read_raw_stack(path) as stack:
        got = stack.groups[key]
    assert got.shape == groups[key].shape
    np.testing.assert_array_equal(got, groups[key])


def test_group_array_refuses_indices_numpy_would_refuse(tmp_path: Path, groups: np.ndarray) -> None:
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, groups.reshape(-1, SIZE, SIZE), metadata=None)
    with read_raw_stack(path) as stack:
        for bad in ([0, 3], [-4], [True, False], 1.5, [[0, 1]]):
            with pytest.raises(IndexError):
                stack.groups[bad]
        with pytest.raises(IndexError):
            stack.groups[0:2, 9]


# ------------------------------------------------------------------------------- pixel size


def test_pixel_size_from_imagej_written_by_us(tmp_path: Path, groups: np.ndarray) -> None:
    path = tmp_path / "cal.tif"
    write_tiff_atomic(path, groups[0], pixel_size_um=0.0725)
    with read_raw_stack(path) as stack:
        assert stack.pixel_size_um == pytest.approx(0.0725, rel=1e-6)


def test_pixel_size_from_resolution_tags_in_centimetres(tmp_path: Path, groups: np.ndarray) -> None:
    path = tmp_path / "cm.tif"
    tifffile.imwrite(
        path,
        groups[0],
        metadata=None,
        resolution=(1e4 / 0.09, 1e4 / 0.09),
        resolutionunit="CENTIMETER",
    )
    with read_raw_stack(path) as stack:
        assert stack.pixel_size_um == pytest.approx(0.09, rel=1e-6)


def test_no_pixel_size_without_calibration(tmp_path: Path, groups: np.ndarray) -> None:
    path = tmp_path / "inch.tif"
    tifffile.imwrite(path, groups[0], metadata=None, resolution=(72, 72))  # 72 dpi default
    with read_raw_stack(path) as stack:
        assert stack.pixel_size_um is None


def test_implausible_pixel_size_is_ignored_with_a_warning(
    tmp_path: Path, groups: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "huge.tif"
    tifffile.imwrite(
        path, groups[0], imagej=True, metadata={"unit": "um"}, resolution=(1 / 50, 1 / 50)
    )
    with caplog.at_level(logging.WARNING), read_raw_stack(path) as stack:
        assert stack.pixel_size_um is None
    assert "ignoring metadata pixel size 50" in caplog.text


# ------------------------------------------------------------------------------- bad inputs


def _assert_one_line(exc: pytest.ExceptionInfo, path: Path, *fragments: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message


def test_frame_count_not_a_multiple_of_nine(tmp_path: Path, groups: np.ndarray) -> None:
    path = tmp_path / "ten.tif"
    tifffile.imwrite(path, groups.reshape(-1, SIZE, SIZE)[:10], metadata=None)
    with pytest.raises(MLSimError) as exc:
        read_raw_stack(path)
    _assert_one_line(exc, path, "found 10 frames", "multiple of 9")


def test_single_2d_image(tmp_path: Path, groups: np.ndarray) -> None:
    path = tmp_path / "one.tif"
    tifffile.imwrite(path, groups[0, 0], metadata=None)
    with pytest.raises(MLSimError) as exc:
        read_raw_stack(path)
    _assert_one_line(exc, path, "single 2D image of 64x64", "9*T frames")


@pytest.mark.parametrize("shape", [(3, 9), (3, 3, 3)])
def test_nd_data_without_axes(tmp_path: Path, groups: np.ndarray, shape: tuple) -> None:
    path = tmp_path / "nd.tif"
    # tifffile's shaped series: axes Q, Q(, Q), Y, X
    tifffile.imwrite(path, groups.reshape(*shape, SIZE, SIZE), photometric="minisblack")
    with pytest.raises(MLSimError) as exc:
        read_raw_stack(path)
    _assert_one_line(exc, path, f"{len(shape) + 2}D data", "angle", "phase")


def test_imagej_channels_and_slices_without_axis_options(
    tmp_path: Path, groups: np.ndarray
) -> None:
    path = tmp_path / "zcyx.tif"
    tifffile.imwrite(
        path, groups[0].reshape(3, 3, SIZE, SIZE), imagej=True, metadata={"axes": "ZCYX"}
    )
    with pytest.raises(MLSimError) as exc:
        read_raw_stack(path)
    _assert_one_line(exc, path, "4D data", "--angle-axis/--phase-axis")


def test_axis_options_checked(tmp_path: Path, groups: np.ndarray) -> None:
    path = tmp_path / "zcyx.tif"
    tifffile.imwrite(
        path, groups[0].reshape(3, 3, SIZE, SIZE), imagej=True, metadata={"axes": "ZCYX"}
    )
    with pytest.raises(MLSimError, match="axis A is absent"):
        read_raw_stack(path, angle_axis="A", phase_axis="Z")
    with pytest.raises(MLSimError, match="angle axis T has 1 entries"):
        read_raw_stack(path, angle_axis="T", phase_axis="Z")
    with pytest.raises(MLSimError, match="both axes or neither"):
        read_raw_stack(path, angle_axis="C")
    with pytest.raises(MLSimError, match="both"):
        read_raw_stack(path, angle_axis="C", phase_axis="C")
    wrong = tmp_path / "c2.tif"
    tifffile.imwrite(
        wrong, groups[0, :8].reshape(2, 4, SIZE, SIZE), imagej=True, metadata={"axes": "ZCYX"}
    )
    with pytest.raises(MLSimError, match=r"angle axis C has 4 entries .*; expected 3"):
        read_raw_stack(wrong, angle_axis="C", phase_axis="Z")


def test_unknown_order(tmp_path: Path) -> None:
    with pytest.raises(MLSimError, match="order 'random' is unknown"):
        read_raw_stack(tmp_path / "x.tif", order="random")


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(MLSimError) as exc:
        read_raw_stack(tmp_path / "nope.tif")
    _assert_one_line(exc, tmp_path / "nope.tif", "no such file")
    with pytest.raises(MLSimError, match="is a folder"):
        read_raw_stack(tmp_path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "not a readable TIFF"),
        (b"this is not a tiff at all" * 10, "not a readable TIFF"),
        (b"II*\x00\x08\x00\x00\x00", "contains no images"),
    ],
    ids=["empty", "garbage", "header-only"],
)
def test_empty_and_corrupt_files(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "bad.tif"
    path.write_bytes(content)
    with pytest.raises(MLSimError) as exc:
        read_raw_stack(path)
    _assert_one_line(exc, path, expected)


@pytest.mark.parametrize("kind", ["plain", "imagej", "ome", "zlib"])
@pytest.mark.parametrize("fraction", [0.5, 0.97])
def test_truncated_files(tmp_path: Path, groups: np.ndarray, kind: str, fraction: float) -> None:
    full = tmp_path / "full.tif"
    frames = groups.reshape(-1, SIZE, SIZE)
    kwargs = {
        "plain": {"metadata": None},
        "imagej": {"imagej": True},
        "ome": {"metadata": {"axes": "TAPYX"}, "photometric": "minisblack"},
        "zlib": {"metadata": None, "compression": "zlib"},
    }[kind]
    data = groups.reshape(3, 3, 3, SIZE, SIZE) if kind == "ome" else frames
    tifffile.imwrite(full, data, **kwargs)
    blob = full.read_bytes()
    path = tmp_path / f"{kind}_cut.tif"
    path.write_bytes(blob[: int(len(blob) * fraction)])
    with pytest.raises(MLSimError) as exc:  # at open, or at the latest when the frames are read
        with read_raw_stack(path) as stack:
            for _ in iter_groups(stack):
                pass
    _assert_one_line(exc, path)
    assert any(w in str(exc.value) for w in ("truncated", "corrupt", "cannot read")), exc.value


def test_corrupt_compressed_data(tmp_path: Path, groups: np.ndarray) -> None:
    path = tmp_path / "zlib.tif"
    tifffile.imwrite(path, groups.reshape(-1, SIZE, SIZE), compression="zlib", metadata=None)
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[13].dataoffsets[0]
    blob = bytearray(path.read_bytes())
    blob[offset : offset + 64] = b"\xff" * 64  # scramble the deflate stream of frame 13
    path.write_bytes(bytes(blob))
    with read_raw_stack(path) as stack:
        stack.group(0)  # frames 0-8 are fine
        with pytest.raises(MLSimError) as exc:
            stack.group(1)
    _assert_one_line(exc, path, "frames 9-17")


@pytest.mark.parametrize("dtype", [np.complex64, np.bool_])
def test_non_numeric_dtype(tmp_path: Path, dtype: type) -> None:
    path = tmp_path / "odd.tif"
    tifffile.imwrite(path, np.ones((9, 16, 16), dtype=dtype), metadata=None)
    with pytest.raises(MLSimError) as exc:
        read_raw_stack(path)
    _assert_one_line(exc, path, "pixel type", "expected integer or float")


def test_rgb_frames(tmp_path: Path) -> None:
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, np.ones((9, 16, 16, 3), np.uint8), photometric="rgb")
    with pytest.raises(MLSimError, match="3 samples per pixel"):
        read_raw_stack(path)


def test_constant_frames(tmp_path: Path, groups: np.ndarray) -> None:
    raw = groups[:2].copy()
    raw[1, 4] = 100
    path = tmp_path / "flat.tif"
    tifffile.imwrite(path, raw.reshape(-1, SIZE, SIZE), metadata=None)
    zeros = tmp_path / "zeros.tif"
    tifffile.imwrite(zeros, np.zeros((9, SIZE, SIZE), np.uint16), metadata=None)
    with read_raw_stack(path) as stack:
        stack.group(0)
        with pytest.raises(MLSimError) as exc:
            stack.group(1)
    _assert_one_line(exc, path, "group 1", "frame 4 (angle 1, phase 1) is constant", "100")
    with read_raw_stack(zeros) as stack, pytest.raises(MLSimError) as exc:
        stack.group(0)
    _assert_one_line(exc, zeros, "all 9 frames are constant")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf(tmp_path: Path, groups: np.ndarray, bad: float) -> None:
    raw = groups[:1].astype(np.float32)
    raw[0, 2, 5, 7] = bad
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, raw.reshape(-1, SIZE, SIZE), metadata=None)
    with read_raw_stack(path) as stack, pytest.raises(MLSimError) as exc:
        next(iter_groups(stack))
    _assert_one_line(exc, path, "group 0 has 1 NaN/Inf pixels")


# ------------------------------------------------------------------------------------ writing


def test_write_tiff_atomic_float32_with_pixel_size_and_metadata(tmp_path: Path) -> None:
    image = np.random.default_rng(1).random((32, 48))  # float64 in, float32 out
    path = write_tiff_atomic(tmp_path / "sr.tif", image, 0.04, {"method": "wiener", "n": 3})
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        data = tif.asarray()
        assert tif.imagej_metadata["unit"] == "um"
        xres = tif.pages.first.tags["XResolution"].value
    assert data.dtype == np.float32
    np.testing.assert_array_equal(data, image.astype(np.float32))
    assert xres[1] / xres[0] == pytest.approx(0.04)
    meta = read_tiff_metadata(path)
    assert meta["pixel_size_um"] == pytest.approx(0.04)
    assert meta["metadata"] == {"method": "wiener", "n": 3}
    assert no_temp_files(tmp_path)


def test_write_tiff_atomic_keeps_uint16_and_stacks(tmp_path: Path, groups: np.ndarray) -> None:
    path = write_tiff_atomic(tmp_path / "raw.tif", groups[0])
    back = tifffile.imread(path)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, groups[0])


def test_write_tiff_atomic_refuses_existing_output(tmp_path: Path) -> None:
    path = tmp_path / "sr.tif"
    write_tiff_atomic(path, np.ones((8, 8)))
    before = path.read_bytes()
    with pytest.raises(MLSimError) as exc:
        write_tiff_atomic(path, np.zeros((8, 8)))
    _assert_one_line(exc, path, "already exists", "--overwrite")
    assert path.read_bytes() == before
    write_tiff_atomic(path, np.full((8, 8), 7.0), overwrite=True)
    assert tifffile.imread(path)[0, 0] == 7.0
    assert no_temp_files(tmp_path)


def test_write_tiff_atomic_rejects_bad_data(tmp_path: Path) -> None:
    with pytest.raises(MLSimError, match="expected"):
        write_tiff_atomic(tmp_path / "c.tif", np.ones((4, 4), np.complex64))
    with pytest.raises(MLSimError, match=r"expected \(H, W\) or \(T, H, W\)"):
        write_tiff_atomic(tmp_path / "c.tif", np.ones((2, 2, 4, 4)))
    assert list(tmp_path.iterdir()) == []


def test_write_tiff_stack_streams_frames(tmp_path: Path) -> None:
    frames = [np.full((16, 24), i, np.float32) for i in range(5)]
    path = write_tiff_stack_atomic(tmp_path / "t.tif", iter(frames), (5, 16, 24), 0.03)
    data = tifffile.imread(path)
    assert data.shape == (5, 16, 24) and data.dtype == np.float32
    np.testing.assert_array_equal(data[:, 0, 0], np.arange(5))
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].axes == "TYX"
    assert read_tiff_metadata(path)["pixel_size_um"] == pytest.approx(0.03)


def test_write_tiff_stack_leaves_nothing_on_error(tmp_path: Path) -> None:
    def failing():
        yield np.zeros((16, 16), np.float32)
        raise MLSimError("group 1 is bad")

    with pytest.raises(MLSimError, match="group 1 is bad"):
        write_tiff_stack_atomic(tmp_path / "t.tif", failing(), (3, 16, 16))
    with pytest.raises(MLSimError, match="got 2 frames; expected 3"):
        write_tiff_stack_atomic(tmp_path / "t.tif", [np.zeros((16, 16))] * 2, (3, 16, 16))
    with pytest.raises(MLSimError, match="has shape"):
        write_tiff_stack_atomic(tmp_path / "t.tif", [np.zeros((16, 8))] * 3, (3, 16, 16))
    assert list(tmp_path.iterdir()) == []


def test_write_json_atomic(tmp_path: Path) -> None:
    path = write_json_atomic(tmp_path / "a.json", {"x": np.float32(1.5), "p": tmp_path})
    assert json.loads(path.read_text()) == {"x": 1.5, "p": str(tmp_path)}
    with pytest.raises(MLSimError, match="already exists"):
        write_json_atomic(path, {"x": 2})
    write_json_atomic(path, {"x": 2}, overwrite=True)
    assert json.loads(path.read_text()) == {"x": 2}
    assert no_temp_files(tmp_path)


def dead_pid() -> int:
    """The id of a process that has ended."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


def test_temporary_names_carry_machine_and_process(tmp_path: Path) -> None:
    temp = temp_path_for(tmp_path / "a_sr.tif")
    assert temp.parent == tmp_path
    assert temp.name.startswith(f".a_sr.tif.{host_tag()}-{os.getpid()}-")
    assert temp.name.endswith(".tmp")


def test_orphans_of_dead_processes_are_removed_whatever_their_name(tmp_path: Path, caplog) -> None:
    dead, alive, here = dead_pid(), os.getpid(), host_tag()
    other_host = "0" * 6 if here != "0" * 6 else "1" * 6
    files = {
        "killed_other_name": f".demo_3_sr.tif.{here}-{dead}-0123abcd.tmp",
        "killed_same_name": f".demo_4_sr.tif.{here}-{dead}-0123abcd.tmp",
        "running": f".demo_2_sr.tif.{here}-{alive}-0123abcd.tmp",
        "other_machine": f".demo_1_sr.tif.{other_host}-{dead}-0123abcd.tmp",
        "old_pid_only": f".old_sr.tif.{dead}-0123abcd.tmp",
        "old_no_pid": ".old_summary.json.0123abcdef.tmp",
        "not_ours": ".demo_3_sr.tif.swp",
    }
    for name in files.values():
        (tmp_path / name).write_bytes(b"x")

    def left() -> set[str]:
        return {k for k, name in files.items() if (tmp_path / name).exists()}

    # by name only: the named output's orphan goes, another name's stays
    assert remove_orphans(tmp_path, ["demo_4_sr.tif"]) == [tmp_path / files["killed_same_name"]]
    assert "killed_other_name" in left()
    with caplog.at_level(logging.WARNING, logger="mlsim_live.io"):
        removed = remove_orphans(tmp_path, ["demo_5_sr.tif"], any_name=True)
    assert removed == [tmp_path / files["killed_other_name"]]
    assert "removed 1 temporary file(s) left by an interrupted run" in caplog.text
    # a running process, another machine, earlier versions' names not asked for, other files
    assert left() == {"running", "other_machine", "old_pid_only", "old_no_pid", "not_ours"}
    # earlier versions' names go when their output is named
    removed = remove_orphans(tmp_path, ["old_sr.tif", "old_summary.json"], any_name=True)
    assert sorted(removed) == sorted(tmp_path / files[k] for k in ("old_pid_only", "old_no_pid"))
    assert left() == {"running", "other_machine", "not_ours"}


def write_like_pymmcore_plus(path: Path, data: np.ndarray, names: list[str]) -> None:
    """Write ``(T, C, Y, X)`` as pymmcore-plus's OME-TIFF writer does: an empty OME-TIFF with
    the channel names and axes ``TCYX``, then the frames through a memory map."""
    metadata = {"axes": "TCYX", "Channel": {"Name": names}}
    tifffile.imwrite(path, shape=data.shape, dtype=data.dtype, metadata=metadata, ome=True)
    mmap = tifffile.memmap(path, dtype=data.dtype)
    mmap.shape = data.shape
    mmap[:] = data
    mmap.flush()
    del mmap


PATTERN_NAMES = [f"A{a}P{p}" for a in range(3) for p in range(3)]


def test_ome_channels_named_by_pattern_read_as_angle_major_groups(tmp_path: Path) -> None:
    """pymmcore-plus's writer: T x 9 channels named A<a>P<p>, here in a shuffled order."""
    g = sim_groups(2)
    perm = np.random.default_rng(3).permutation(9)
    assert not np.array_equal(perm, np.arange(9))
    path = tmp_path / "plus_1.ome.tif"
    write_like_pymmcore_plus(path, g[:, perm], [PATTERN_NAMES[i] for i in perm])
    data, stack = read_all(path)
    assert stack.format == "ome" and stack.layout == "channels" and stack.n_groups == 2
    np.testing.assert_array_equal(data, g)


@pytest.mark.parametrize(
    "names",
    [
        [*PATTERN_NAMES[:8], "A0P0"],  # A2P2 missing, A0P0 twice
        [*PATTERN_NAMES[:8], "DAPI"],
        [*PATTERN_NAMES[:8], "A3P0"],
    ],
)
def test_ome_pattern_channel_names_must_be_complete(tmp_path: Path, names: list[str]) -> None:
    path = tmp_path / "bad_names.ome.tif"
    write_like_pymmcore_plus(path, sim_groups(2, size=16), names)
    with pytest.raises(MLSimError, match=r"bad_names.ome.tif: OME channel names .* A0P0..A2P2"):
        read_raw_stack(path)


def test_ome_wrong_count_of_pattern_channels_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "eight.ome.tif"
    write_like_pymmcore_plus(path, sim_groups(2, size=16)[:, :8], PATTERN_NAMES[:8])
    with pytest.raises(MLSimError, match=r"\(8 channels\) are not a complete set"):
        read_raw_stack(path)
