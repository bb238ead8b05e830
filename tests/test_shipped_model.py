"""The shipped default model: card, default use, and the trust checks on a held-out set.

The full held-out evaluation (48 groups) is in the README; this is its small, always-run guard:
at every photon level the model must not be worse than widefield (no invented structure costs
PSNR), must recover detail beyond the widefield cutoff, and must keep empty background clean.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from mlsim_live.paths import default_model_path, has_default_model

pytestmark = pytest.mark.skipif(not has_default_model(), reason="no default model installed")


def test_card_matches_the_model_file():
    path = default_model_path()
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert card["scale"] == 2
    assert "physics_ranges" in json.dumps(card)
    assert "normalization" in card


def test_reconstruct_uses_the_default_model(tmp_path, capsys):
    import tifffile

    from mlsim_live.cli import main
    from mlsim_live.sim import simulate_group

    raw = simulate_group(sample="filaments", size=64, seed=1).raw
    tifffile.imwrite(tmp_path / "g.tif", raw)
    assert main(["reconstruct", str(tmp_path / "g.tif"), "--out", str(tmp_path / "o")]) == 0
    sidecar = json.loads((tmp_path / "o" / "g_sr.json").read_text())
    assert default_model_path().name in json.dumps(sidecar)
    assert tifffile.imread(tmp_path / "o" / "g_sr.tif").shape == (128, 128)


@pytest.mark.slow
def test_no_worse_than_widefield_and_real_detail_at_every_photon_level():
    from mlsim_live.evaluation import evaluate, held_out_set
    from mlsim_live.recon import make_reconstructor

    rcan = make_reconstructor("rcan")
    widefield = make_reconstructor("widefield")
    groups = held_out_set(groups_per_level=2, size=96, seed=12345)
    result = evaluate({"widefield": lambda g: widefield, "rcan": lambda g: rcan}, groups, False)
    for level, by_method in result["per_level"].items():
        wf, net = by_method["widefield"], by_method["rcan"]
        assert net["psnr_db"] > wf["psnr_db"], level
        assert net["ssim"] > wf["ssim"], level
        if np.isfinite(net["background"]):
            assert net["background"] <= wf["background"] + 0.01, level
    corr = [m["rcan"]["beyond_cutoff_corr"] for m in result["per_level"].values()]
    corr_wf = [m["widefield"]["beyond_cutoff_corr"] for m in result["per_level"].values()]
    # from 100 photons up the network must carry real detail beyond the cutoff; widefield none
    assert np.mean(corr[2:]) > 0.3 > np.mean(corr_wf[2:])
