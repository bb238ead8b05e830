"""The judge on the public real stacks in ../shared/data/real (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlsim_live.judge import judge_stack, read_stack_info
from mlsim_live.recon import make_reconstructor

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
MICROTUBULES = REAL / "microtubules_rdlsim_9x256x256.tif"
BEADS = REAL / "beads_hao_9x512x512.tif"

pytestmark = pytest.mark.skipif(
    not MICROTUBULES.exists() or not BEADS.exists(), reason="../shared/data/real is absent"
)


def classical(path: Path) -> dict:
    optics = read_stack_info(path).optics
    return {m: make_reconstructor(m, optics=optics) for m in ("widefield", "wiener")}


def test_microtubules_photons_per_angle_and_frc_in_nm() -> None:
    j = judge_stack(MICROTUBULES, reconstructors=classical(MICROTUBULES), n_rungs=2)
    cal = j.calibration
    # the source rescaled each angle on its own: its quantization steps (360, 320, 375 ADU per
    # count) stand in the same ratio as the per-angle gains found from the noise
    assert cal.per_angle
    steps = np.array([360.3, 319.7, 374.6])
    ratios = np.array(cal.gain_per_angle_adu_per_photon) / steps
    assert np.ptp(ratios) / ratios.mean() < 0.08
    assert 5 < cal.peak_photons < 100  # a very low-signal stack
    wf = j.method("widefield").frc.frc_resolution_nm
    assert wf == pytest.approx(j.expected["widefield_limit_nm"], rel=0.25)
    assert j.to_dict()["units"] == "nm"


@pytest.mark.slow
def test_beads_wiener_resolves_finer_than_widefield_with_more_beads() -> None:
    j = judge_stack(BEADS, reconstructors=classical(BEADS), n_rungs=1)
    assert not j.calibration.per_angle
    wf, wiener = j.method("widefield"), j.method("wiener")
    assert wiener.frc.frc_resolution_nm < 0.75 * wf.frc.frc_resolution_nm
    assert wiener.beads.fwhm_median_nm < 0.7 * wf.beads.fwhm_median_nm
    assert wiener.beads.fwhm_median_nm == pytest.approx(j.expected["bead_fwhm_sim_nm"], rel=0.2)
    assert wiener.beads.n_beads > wf.beads.n_beads  # widefield merges close beads
