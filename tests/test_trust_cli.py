"""`mlsim-live trust RAW SR --out DIR` and `reconstruct --trust`: files, figures, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from mlsim_live.cli import main
from mlsim_live.recon.wiener import WienerReconstructor
from mlsim_live.sim import simulate_group
from mlsim_live.sim.simulate import Signal, SIMParams

OPTICS_ARGS: list[str] = []


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, Path, SIMParams]:
    """A raw stack of two groups and its Wiener reconstruction (T x 2N x 2M)."""
    folder = tmp_path_factory.mktemp("trust")
    params = SIMParams(signal=Signal(peak_photons=500.0))
    groups = [simulate_group(params, "filaments", 64, seed=s) for s in (1, 2)]
    raw = np.concatenate([g.raw for g in groups])
    raw_path = folder / "cells.tif"
    tifffile.imwrite(raw_path, raw)
    wiener = WienerReconstructor(optics=params.optics)
    sr = np.stack([wiener.reconstruct(g.raw) for g in groups])
    sr_path = folder / "cells_sr.tif"
    tifffile.imwrite(sr_path, sr.astype(np.float32))
    OPTICS_ARGS[:] = [
        "--na",
        str(params.optics.na),
        "--wavelength-nm",
        str(params.optics.wavelength_nm),
        "--pixel-size-um",
        str(params.optics.pixel_size_um),
    ]
    return raw_path, sr_path, params


def test_trust_writes_map_overlay_and_figures(recorded, tmp_path: Path, capsys) -> None:
    raw_path, sr_path, _ = recorded
    out = tmp_path / "out"
    assert main(["trust", str(raw_path), str(sr_path), "--out", str(out), *OPTICS_ARGS]) == 0
    trust = tifffile.imread(out / "cells_sr_trust.tif")
    assert trust.shape == (2, 128, 128) and trust.dtype == np.float32
    assert 0.0 <= trust.min() and trust.max() <= 1.0
    png = out / "cells_sr_trust.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads((out / "cells_sr_trust.json").read_text())
    assert len(doc["per_group"]) == 2
    assert {"flagged_fraction", "chi_median", "residual_flagged_fraction"} <= set(
        doc["per_group"][0]
    )
    assert doc["summary"]["flagged_fraction"]["p50"] < 0.05
    assert doc["noise"]["source"] == "photon transfer"
    assert "flagged fraction" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "cells_sr_trust.json",
        "cells_sr_trust.png",
        "cells_sr_trust.tif",
    ]


def test_existing_outputs_are_kept_unless_overwrite(recorded, tmp_path: Path, capsys) -> None:
    raw_path, sr_path, _ = recorded
    args = ["trust", str(raw_path), str(sr_path), "--out", str(tmp_path), *OPTICS_ARGS]
    assert main(args) == 0
    before = (tmp_path / "cells_sr_trust.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0] and "--overwrite" in err[0]
    assert (tmp_path / "cells_sr_trust.json").stat().st_mtime_ns == before
    assert main([*args, "--overwrite"]) == 0


@pytest.mark.parametrize(
    ("make_sr", "expected"),
    [
        (lambda sr: sr[:, :64, :64], "expected the 2x grid"),
        (lambda sr: sr[:1], "expected one reconstruction per group"),
        (lambda sr: np.zeros((2, 2, 2, 128, 128), np.float32), "expected a numeric image"),
    ],
    ids=["wrong-grid", "wrong-count", "4d"],
)
def test_bad_input_exits_2_with_one_line_and_no_output(
    recorded, tmp_path: Path, capsys, make_sr, expected: str
) -> None:
    raw_path, sr_path, _ = recorded
    bad = tmp_path / "bad_sr.tif"
    tifffile.imwrite(bad, make_sr(tifffile.imread(sr_path)))
    out = tmp_path / "out"
    assert main(["trust", str(raw_path), str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert not out.exists()


def test_missing_files_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["trust", str(tmp_path / "a.tif"), str(tmp_path / "b.tif"), "--out", "x"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_reconstruct_trust_writes_beside_each_reconstruction(recorded, tmp_path: Path) -> None:
    raw_path, _, _ = recorded
    out = tmp_path / "rec"
    args = ["reconstruct", str(raw_path), "--out", str(out), "--method", "wiener"]
    assert main([*args, *OPTICS_ARGS, "--trust"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "cells_sr.json",
        "cells_sr.tif",
        "cells_trust.json",
        "cells_trust.png",
        "cells_trust.tif",
    ]
    sr = tifffile.imread(out / "cells_sr.tif")
    trust = tifffile.imread(out / "cells_trust.tif")
    assert trust.shape == sr.shape
    doc = json.loads((out / "cells_trust.json").read_text())
    assert doc["method"] == "wiener" and doc["summary"]["groups_mapped"] == 2


def test_help_is_instant() -> None:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mlsim_live", "trust", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "--out" in done.stdout
    assert time.perf_counter() - start < 10.0
    code = "import sys, mlsim_live.cli.trust; print('numpy' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert loaded.stdout.strip() == "False"


def test_replay_trust_writes_beside_the_sr_file(recorded, tmp_path: Path) -> None:
    raw_path, _, _ = recorded
    out = tmp_path / "rp"
    args = ["replay", str(raw_path), "--out", str(out), "--method", "wiener", "--headless"]
    assert main([*args, *OPTICS_ARGS, "--trust"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "cells_sr.tif",
        "cells_summary.json",
        "cells_trust.json",
        "cells_trust.png",
        "cells_trust.tif",
    ]
    assert tifffile.imread(out / "cells_trust.tif").shape == (2, 128, 128)
    summary = json.loads((out / "cells_summary.json").read_text())
    assert summary["trust_groups"] == 2
    assert (
        0.0 <= summary["trust_flagged_fraction"]["p50"] <= summary["trust_flagged_fraction"]["p95"]
    )
