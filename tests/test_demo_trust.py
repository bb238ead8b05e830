"""`demo --trust` / `live --trust`: the newest group's trust map on its own thread, written beside
the SR file, summarized in the summary, with the optics the run knows."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile

from mlsim_live.cli import main

pytestmark = pytest.mark.mm


def test_cli_demo_trust_headless_writes_the_maps_beside_the_sr(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["demo", "--headless", "--groups", "4", "--out", str(out), "--size", "128"]
    code = main([*args, "--method", "wiener", "--policy", "all", "--trust"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "demo_1_summary.json").read_text())
    assert summary["groups_reconstructed"] == 4 and summary["errors"] == 0
    mapped, skipped = summary["trust_groups"], summary["trust_skipped"]
    # the newest group waiting is mapped, those it overtook are skipped; the last one always
    assert mapped >= 1 and mapped + skipped + summary["trust_failures"] == 4
    flagged = summary["trust_flagged_fraction"]
    assert 0.0 <= flagged["p50"] <= flagged["p95"] <= 1.0
    # Wiener on the demo's simulated optics (known to the map) is consistent with its frames
    assert flagged["p95"] < 0.1, flagged

    with tifffile.TiffFile(out / "demo_1_trust.tif") as tif:
        assert len(tif.pages) == mapped
        pages = [json.loads(p.description) for p in tif.pages]
        trust = tif.asarray()
    sr = tifffile.imread(out / "demo_1_sr.tif")
    assert trust.dtype == np.float32 and trust.reshape(mapped, *sr.shape[1:]).shape[1:] == (
        256,
        256,
    )
    assert 0.0 <= trust.min() and trust.max() <= 1.0
    indices = [p["index"] for p in pages]
    assert indices == sorted(indices) and indices[-1] == 3  # the last group is mapped
    doc = json.loads((out / "demo_1_trust.json").read_text())
    assert [g["index"] for g in doc["per_group"]] == indices
    assert doc["skipped"] == skipped and doc["overlay_group"] == indices[0]
    assert (out / "demo_1_trust.png").stat().st_size > 0


def test_demo_trust_sink_gets_the_simulated_optics(tmp_path, fake_reconstructor):
    from mlsim_live.live.demo import DemoRun, DemoSettings

    settings = DemoSettings(groups=1, size=64, out=tmp_path, exposure_ms=2.0, trust=True)
    demo = DemoRun(settings, reconstructor=fake_reconstructor())
    try:
        sink = demo.processor.trust_sink
        assert sink is not None and not sink.every
        assert demo.processor.optics == demo.optics.params.optics
        assert sink._stream.optics == demo.optics.params.optics
        assert sink.paths.tif == tmp_path / f"{demo.name}_trust.tif"
    finally:
        demo.processor.close()


def test_the_viewer_gets_the_runs_optics_and_trust_sink(monkeypatch):
    """The viewer's trust overlay uses the optics the run knows (it must not guess them) and,
    with --trust, shows the run's own maps instead of computing them a second time."""
    import mlsim_live.viewer as viewer
    from mlsim_live.cli._viewer import run_acquisition_with_viewer, run_replay_with_viewer

    seen: list[dict] = []
    monkeypatch.setattr(viewer, "run_with_viewer", lambda job, stop, **kw: seen.append(kw) or {})
    optics, sink = object(), object()
    processor = SimpleNamespace(
        add_sink=None, summary={}, pipeline=SimpleNamespace(simulated=True), optics=optics
    )
    processor.trust_sink = sink
    run_acquisition_with_viewer(
        SimpleNamespace(run=None, stop=None, processor=processor), None, False
    )
    replay = SimpleNamespace(
        run=None, stop=None, add_sink=None, summary={}, simulated=False, name="x", optics=optics
    )
    replay.trust_sink = None
    run_replay_with_viewer(replay, None, False)
    assert [(kw["optics"], kw["trust_sink"]) for kw in seen] == [(optics, sink), (optics, None)]
