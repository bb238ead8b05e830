"""Judge reconstructions of real SIM data without ground truth: photon calibration from the
data, split-half FRC, a photon ladder and bead sizes (``mlsim-live evaluate --real``).

Score a model programmatically::

    from mlsim_live.judge import judge_stack
    j = judge_stack("beads.tif", ["widefield", "wiener", "rcan"], model="my.onnx")
    j.method("rcan").frc.frc_resolution_nm

Pure numpy/scipy; reconstructors are built by `mlsim_live.recon.make_reconstructor`.
"""

from mlsim_live.judge.beads import BeadStats, expected_bead_fwhm_nm, find_beads, fit_gaussian
from mlsim_live.judge.frc import FRC_THRESHOLD, FRCResult, frc_curve
from mlsim_live.judge.ladder import LadderScore
from mlsim_live.judge.photons import (
    PhotonCalibration,
    estimate_photon_calibration,
    given_calibration,
    split_photons,
    thin_photons,
)
from mlsim_live.judge.report import report_markdown, write_report
from mlsim_live.judge.run import (
    FolderJudgement,
    MethodJudgement,
    StackJudgement,
    build_reconstructors,
    default_methods,
    judge_folder,
    judge_group,
    judge_stack,
    split_half_frc,
)
from mlsim_live.judge.stack import StackInfo, read_stack_info

__all__ = [
    "FRC_THRESHOLD",
    "BeadStats",
    "FRCResult",
    "FolderJudgement",
    "LadderScore",
    "MethodJudgement",
    "PhotonCalibration",
    "StackInfo",
    "StackJudgement",
    "build_reconstructors",
    "default_methods",
    "estimate_photon_calibration",
    "expected_bead_fwhm_nm",
    "find_beads",
    "fit_gaussian",
    "frc_curve",
    "given_calibration",
    "judge_folder",
    "judge_group",
    "judge_stack",
    "read_stack_info",
    "report_markdown",
    "split_half_frc",
    "split_photons",
    "thin_photons",
    "write_report",
]
