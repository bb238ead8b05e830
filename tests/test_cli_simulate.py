"""`mlsim-live simulate`: complete groups or none, never a partial set of files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from mlsim_live.cli import main
from mlsim_live.errors import MLSimError

ARGS = ["--n", "2", "--size", "32", "--sample", "beads"]


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, list[str]]:
    code = main(["-q", "simulate", *args])  # -q: no progress bar on stderr
    return code, capsys.readouterr().err.splitlines()


def test_writes_raw_truth_and_parameters_per_group(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "sim"
    code, err = run(capsys, "--out", str(out), *ARGS)
    assert code == 0, err
    assert names(out) == [
        "sim_0000.json", "sim_0000_gt.tif", "sim_0000_raw.tif",
        "sim_0001.json", "sim_0001_gt.tif", "sim_0001_raw.tif",
    ]  # fmt: skip
    raw = tifffile.imread(out / "sim_0001_raw.tif")
    assert raw.shape == (9, 32, 32) and raw.dtype == np.uint16
    assert tifffile.imread(out / "sim_0001_gt.tif").shape == (64, 64)
    assert json.loads((out / "sim_0001.json").read_text())


@pytest.mark.parametrize("existing", ["sim_0001.json", "sim_0001_gt.tif", "sim_0000_raw.tif"])
def test_an_existing_target_stops_the_run_before_any_write(
    tmp_path: Path, capsys: pytest.CaptureFixture, existing: str
) -> None:
    out = tmp_path / "sim"
    out.mkdir()
    (out / existing).write_text("earlier result")
    code, err = run(capsys, "--out", str(out), *ARGS)
    assert code == 2
    assert len(err) == 1 and str(out / existing) in err[0] and "--overwrite" in err[0], err
    assert names(out) == [existing]
    assert (out / existing).read_text() == "earlier result"


def test_a_failed_write_removes_that_groups_files(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlsim_live.io

    real = mlsim_live.io.write_json_atomic

    def fail_second(path: Path, data: object, **kw: object) -> Path:
        if Path(path).name == "sim_0001.json":
            raise MLSimError(f"{path}: disk full; expected room for the output")
        return real(path, data, **kw)

    monkeypatch.setattr(mlsim_live.io, "write_json_atomic", fail_second)
    out = tmp_path / "sim"
    code, err = run(capsys, "--out", str(out), *ARGS)
    assert code == 2 and len(err) == 1 and "disk full" in err[0], err
    # group 0 is complete; group 1 left nothing (its TIFFs were written before the JSON failed)
    assert names(out) == ["sim_0000.json", "sim_0000_gt.tif", "sim_0000_raw.tif"]
