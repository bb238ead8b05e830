"""Frames too large for the memory available are refused in one line before any allocation
(issue 12), and the limit can be raised with MLSIM_LIVE_MEMORY_LIMIT_MB."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from mlsim_live.cli import main
from mlsim_live.errors import MLSimError
from mlsim_live.validation import MEMORY_LIMIT_ENV, check_frame_memory


def test_a_group_of_40000_pixel_frames_is_refused_before_allocating(monkeypatch):
    monkeypatch.delenv(MEMORY_LIMIT_ENV, raising=False)
    with pytest.raises(MLSimError) as err:
        check_frame_memory((40000, 40000), 2, "big.tif")
    message = str(err.value)
    assert "\n" not in message
    assert "frames of 40000 x 40000" in message and MEMORY_LIMIT_ENV in message


@pytest.mark.parametrize("command", ["reconstruct", "replay"])
def test_limit_refuses_then_allows(tmp_path, monkeypatch, capsys, command):
    rng = np.random.default_rng(0)
    path = tmp_path / "raw.tif"
    tifffile.imwrite(path, rng.integers(90, 200, (18, 64, 64)).astype(np.uint16), metadata=None)
    args = [command, str(path), "--out", str(tmp_path / "out"), "--method", "widefield"]
    if command == "replay":
        args.append("--headless")
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "0.1")
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "64 x 64" in lines[0] and MEMORY_LIMIT_ENV in lines[0]
    assert "Traceback" not in err
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "1000")  # raised by the user
    assert main(args) == 0


def test_bad_limit_value(monkeypatch):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "lots")
    with pytest.raises(MLSimError, match="expected a number of megabytes"):
        check_frame_memory((8, 8), 2, "x")


@pytest.mark.parametrize("command", ["reconstruct", "replay"])
def test_declared_9_x_40000_x_40000_tiff(tmp_path, monkeypatch, capsys, command):
    """A valid TIFF that declares 28.8 GB of frames (a sparse file here): one line, exit 2."""
    monkeypatch.delenv(MEMORY_LIMIT_ENV, raising=False)
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, shape=(9, 40000, 40000), dtype="uint16", metadata=None)
    if path.stat().st_blocks * 512 > 1 << 20:  # the file system wrote zeros: not worth it
        path.unlink()
        pytest.skip("no sparse files on this file system")
    args = [command, str(path), "--out", str(tmp_path / "out"), "--method", "widefield"]
    if command == "replay":
        args.append("--headless")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "frames of 40000 x 40000" in err and "Traceback" not in err
    assert "MemoryError" not in err
