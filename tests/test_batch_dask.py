"""`reconstruct --dask`: 2 worker processes give byte-identical outputs, loading the model once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from mlsim_live.batch import process_stats
from mlsim_live.cli import main
from mlsim_live.io import write_tiff_atomic
from mlsim_live.sim import Camera, Optics, Pattern, Signal, SIMParams, simulate_group

pytest.importorskip("distributed")
pytestmark = pytest.mark.slow

SIZE = 64


def sim_groups(n_groups: int, seed: int) -> np.ndarray:
    params = SIMParams(
        optics=Optics(na=1.3, wavelength_nm=600, pixel_size_um=0.09),
        pattern=Pattern(frequency_fraction=0.8, angle_offset_deg=5.0, modulation=0.7),
        signal=Signal(peak_photons=800, background_photons=30),
        camera=Camera(kind="scmos", offset_adu=100),
    )
    return np.stack(
        [
            simulate_group(params, sample="filaments", size=SIZE, seed=seed + t).raw
            for t in range(n_groups)
        ]
    )


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    # real worker processes, as on a cluster
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    write_tiff_atomic(folder / "a.tif", sim_groups(3, seed=0).reshape(-1, SIZE, SIZE), 0.09)
    (folder / "sub").mkdir()
    write_tiff_atomic(folder / "sub" / "b.tif", sim_groups(1, seed=10).reshape(-1, SIZE, SIZE))
    tifffile.imwrite(
        folder / "c.ome.tif",
        sim_groups(2, seed=20).reshape(2, 3, 3, SIZE, SIZE),
        metadata={"axes": "TAPYX", "PhysicalSizeX": 0.09, "PhysicalSizeY": 0.09},
        photometric="minisblack",
    )
    tifffile.imwrite(folder / "bad.tif", sim_groups(1, seed=30)[0, :7], metadata=None)
    return folder


def run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, list[str]]:
    code = main(["reconstruct", *args])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def outputs(folder: Path) -> dict[str, object]:
    """Relative path -> TIFF bytes, or the sidecar JSON without its output path."""
    result: dict[str, object] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix == ".tif":
            result[str(path.relative_to(folder))] = path.read_bytes()
        elif path.suffix == ".json":
            sidecar = json.loads(path.read_text())
            sidecar.pop("output")
            result[str(path.relative_to(folder))] = sidecar
    return result


def test_dask_outputs_identical_to_single_machine(
    client, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    common = [str(data), "--method", "wiener", "--na", "1.3", "--wavelength-nm", "600"]
    code_local, err_local = run(capsys, *common, "--out", str(tmp_path / "local"))
    address = client.scheduler.address
    code_dask, err_dask = run(capsys, *common, "--out", str(tmp_path / "dask"), "--dask", address)

    assert code_local == code_dask == 2  # bad.tif
    assert err_local == err_dask
    assert len(err_dask) == 1 and "bad.tif" in err_dask[0] and "found 7 frames" in err_dask[0]
    local, dask = outputs(tmp_path / "local"), outputs(tmp_path / "dask")
    assert sorted(dask) == [
        "a_sr.json",
        "a_sr.tif",
        "c_sr.json",
        "c_sr.tif",
        "sub/b_sr.json",
        "sub/b_sr.tif",
    ]
    assert local == dask  # byte-identical TIFFs, identical sidecars (estimates included)
    assert tifffile.imread(tmp_path / "dask" / "a_sr.tif").shape == (3, 2 * SIZE, 2 * SIZE)

    stats = client.run(process_stats)
    assert sum(s["groups"] for s in stats.values()) == 3 + 1 + 2
    assert all(s["groups"] > 0 for s in stats.values()), stats  # both workers took groups
    for s in stats.values():  # each worker built each reconstructor (one per optics) once
        assert all(n == 1 for n in s["loads"].values()), s
        assert len(s["loads"]) <= 2  # a/c share optics 0.09 um; b has no pixel size


def test_dask_local_cluster_from_the_cli(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = [str(data / "a.tif"), str(data / "c.ome.tif"), "--method", "widefield"]
    assert run(capsys, *args, "--out", str(tmp_path / "local"))[0] == 0
    code, err = run(capsys, *args, "--out", str(tmp_path / "dask"), "--dask", "local")
    assert code == 0, err
    assert outputs(tmp_path / "local") == outputs(tmp_path / "dask")


def test_unreachable_scheduler(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        code, err = run(
            capsys, str(data / "a.tif"), "--out", str(tmp_path / "out"),
            "--method", "widefield", "--dask", "tcp://127.0.0.1:9",
        )  # fmt: skip
    assert code == 2
    assert len(err) == 1 and "cannot connect to a Dask scheduler" in err[0], err
    assert not (tmp_path / "out").exists()
