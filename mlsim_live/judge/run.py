"""Judge reconstructions of real SIM data: photons, split-half FRC, photon ladder and beads.

`judge_group` scores every method on one raw group held in memory; `judge_stack` reads a TIFF
with its JSON sidecar and calls it; `mlsim_live.judge.report` writes the results. The result
types live in `mlsim_live.judge.results` (re-exported here).
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mlsim_live.constants import METHODS
from mlsim_live.errors import MLSimError
from mlsim_live.judge.beads import (
    BeadStats,
    expected_bead_fwhm_nm,
    find_beads,
    isolated,
    measure_beads,
)
from mlsim_live.judge.frc import FRCResult, frc_curve
from mlsim_live.judge.ladder import (
    Band,
    LadderScore,
    beyond_cutoff_band,
    flag_below_widefield,
    score_rung,
)
from mlsim_live.judge.photons import (
    PhotonCalibration,
    estimate_photon_calibration,
    split_photons,
    thin_photons,
)
from mlsim_live.judge.results import (
    BASELINE_METHOD,
    CLASSICAL_METHODS,
    REFERENCE_METHOD,
    FolderJudgement,
    MethodJudgement,
    StackJudgement,
)
from mlsim_live.judge.stack import StackInfo, read_stack_info
from mlsim_live.recon.base import Reconstructor, SupportsFallback
from mlsim_live.sim.optics import Optics

__all__ = [
    "BASELINE_METHOD",
    "CLASSICAL_METHODS",
    "CROP_FRACTIONS",
    "CROP_SIZE_PX",
    "DEFAULT_RUNGS",
    "REFERENCE_METHOD",
    "FolderJudgement",
    "MethodJudgement",
    "StackJudgement",
    "build_reconstructors",
    "default_methods",
    "find_stacks",
    "judge_folder",
    "judge_group",
    "judge_stack",
    "learned_methods",
    "split_half_frc",
    "stack_seed",
]

log = logging.getLogger(__name__)

#: Rungs 1/2 ... 1/2**DEFAULT_RUNGS of the photon ladder.
DEFAULT_RUNGS = 6
#: Rungs shown side by side in the crops.
CROP_FRACTIONS = (1.0, 1.0 / 8, 1.0 / 64)
CROP_SIZE_PX = 256


def learned_methods() -> tuple[str, ...]:
    """Method names of `mlsim_live.constants.METHODS` that are not classical (learned models)."""
    return tuple(m for m in METHODS if m not in CLASSICAL_METHODS)


def default_methods(model: str | Path | None = None) -> tuple[str, ...]:
    """``widefield``, ``wiener`` and every learned method that can be built here."""
    from mlsim_live.recon import make_reconstructor

    names = list(CLASSICAL_METHODS)
    for name in learned_methods():
        try:
            make_reconstructor(name, model=model)
        except MLSimError as exc:
            log.info("method %s is not available (%s); not judged", name, exc)
            continue
        names.append(name)
    return tuple(names)


def build_reconstructors(
    methods: Sequence[str], *, model: str | Path | None = None, optics: Optics | None = None
) -> dict[str, Reconstructor]:
    """Build each method by `mlsim_live.recon.make_reconstructor`; widefield and Wiener are
    always included (the baseline and the reference).

    ``model`` goes to the learned methods only.
    """
    from mlsim_live.recon import make_reconstructor

    names = list(dict.fromkeys([*CLASSICAL_METHODS, *methods]))
    out: dict[str, Reconstructor] = {}
    for name in names:
        learned = name not in CLASSICAL_METHODS
        out[name] = make_reconstructor(name, model=model if learned else None, optics=optics)
    return out


def split_half_frc(
    photons: np.ndarray,
    reconstructor: Reconstructor,
    *,
    seed: int | np.random.SeedSequence = 0,
    sr_pixel_size_um: float | None = None,
) -> FRCResult:
    """Split-half FRC of one reconstructor on one group of photon counts.

    Parameters
    ----------
    photons : ndarray (9, H, W)
        Photon counts (see `PhotonCalibration.to_photons`).
    reconstructor : Reconstructor
        Reconstructs each half on its own.
    seed : int or SeedSequence
        The split; the same seed gives the same halves to every reconstructor.
    sr_pixel_size_um : float, optional
        Pixel size of the reconstructions, for a resolution in nm.
    """
    half1, half2 = split_photons(photons, np.random.default_rng(seed))
    return frc_curve(
        reconstructor.reconstruct(half1), reconstructor.reconstruct(half2), sr_pixel_size_um
    )


def _pattern_geometry(photons: np.ndarray, optics: Optics | None) -> tuple[float, float]:
    """Widefield cutoff and mean pattern frequency in cycles per camera pixel."""
    from mlsim_live.recon.estimate import estimate_pattern

    est = estimate_pattern(photons, optics, offset_adu=0.0, fit_damping=False)
    k = float(np.mean([p.frequency_cycles_per_px for p in est.patterns]))
    return float(est.cutoff_cycles_per_px), k


def _centre_crop(img: np.ndarray, size: int = CROP_SIZE_PX) -> np.ndarray:
    h, w = img.shape
    y, x = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return np.asarray(img[y : y + size, x : x + size], dtype=np.float32)


def stack_seed(seed: int, name: str) -> np.random.SeedSequence:
    """The random stream of one stack: the user's seed and the stack's name (not its place in
    a folder), so a stack's figures do not change when other stacks are added."""
    return np.random.SeedSequence([int(seed), zlib.crc32(name.encode("utf-8"))])


def judge_group(
    group: np.ndarray,
    reconstructors: Mapping[str, Reconstructor],
    *,
    name: str = "group",
    optics: Optics | None = None,
    pixel_size_um: float | None = None,
    sample_kind: str | None = None,
    bead_diameter_nm: float | None = None,
    calibration: PhotonCalibration | None = None,
    n_rungs: int = DEFAULT_RUNGS,
    seed: int = 0,
    progress: bool = False,
) -> StackJudgement:
    """Judge every reconstructor on one raw SIM group.

    Parameters
    ----------
    group : ndarray (9, H, W)
        Raw frames, angle-major, camera counts.
    reconstructors : mapping of str to Reconstructor
        Must hold ``"widefield"`` and ``"wiener"`` (baseline and reference); see
        `build_reconstructors`. Each one reconstructs every half and rung on its own (a method
        estimates its pattern on each input, as it would for a user).
    name : str
        Name in the results; also seeds the random stream with ``seed``.
    optics : Optics, optional
        Detection optics (sets the OTF cutoff); estimated from the data when omitted.
    pixel_size_um : float, optional
        Camera pixel size (from ``optics`` when given): results in nm, else in pixels.
    sample_kind : str, optional
        ``"beads"`` turns on the bead measurements.
    bead_diameter_nm : float, optional
        Bead size, for the expected bead FWHM.
    calibration : PhotonCalibration, optional
        Known camera values; fitted from the data when omitted.
    n_rungs : int
        Ladder rungs 1/2 ... 1/2**n_rungs (plus the full dose).
    seed : int
        Seed of the photon splits and thinning.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    StackJudgement
    """
    _check_judge_request(reconstructors, n_rungs)
    started = time.perf_counter()
    raw = np.asarray(group)
    if optics is not None:
        pixel_size_um = optics.pixel_size_um
    cutoff_hint = None if optics is None else optics.cutoff_per_um * optics.pixel_size_um
    if calibration is None:
        calibration = estimate_photon_calibration(raw, cutoff_hint)
    log.info("%s: %s", name, calibration.describe())
    photons = calibration.to_photons(raw)
    fc_px, k_px = _pattern_geometry(photons, optics)
    sr_px_um = None if pixel_size_um is None else pixel_size_um / 2
    rng = np.random.default_rng(stack_seed(seed, name))
    names = list(reconstructors)
    fractions = [1.0] + [0.5**i for i in range(1, n_rungs + 1)]
    frcs, images, fallbacks = _reconstruct_all(
        photons, reconstructors, fractions, rng, sr_px_um, name=name, progress=progress
    )
    band = beyond_cutoff_band(fc_px / 2, k_px / 2)
    scores = _ladder_scores(images, band, calibration.peak_photons)
    expected = _expected_limits(fc_px, k_px, pixel_size_um)
    beads: dict[str, BeadStats] = {}
    if (sample_kind or "").lower() == "beads":
        beads = _measure_all_beads(
            {m: images[1.0][m] for m in names},
            fc_px,
            k_px,
            sr_px_um,
            pixel_size_um,
            bead_diameter_nm,
            expected,
        )
    judged = tuple(
        MethodJudgement(
            method=m,
            reconstructor=str(reconstructors[m].name),
            frc=frcs[m],
            ladder=tuple(s for s in scores if s.method == m),
            beads=beads.get(m),
            fallback=tuple(fallbacks[m]),
        )
        for m in names
    )
    crop_fractions = [f for f in CROP_FRACTIONS if f in images] or [fractions[0], fractions[-1]]
    crops = {m: {f: _centre_crop(images[f][m]) for f in crop_fractions} for m in names}
    seconds = time.perf_counter() - started
    for mj in judged:
        unit = "nm" if mj.frc.frc_resolution_nm is not None else "px"
        value = mj.frc.frc_resolution_nm or mj.frc.frc_resolution_px
        log.info("%s: %s split-half FRC resolution %.1f %s", name, mj.method, value, unit)
    return StackJudgement(
        name=name,
        frame_shape=(int(raw.shape[-2]), int(raw.shape[-1])),
        pixel_size_um=pixel_size_um,
        optics=optics,
        calibration=calibration,
        cutoff_cycles_per_px=fc_px,
        pattern_cycles_per_px=k_px,
        methods=judged,
        expected=expected,
        seed=int(seed),
        seconds=float(seconds),
        sample_kind=sample_kind,
        crops=crops,
    )


def _check_judge_request(reconstructors: Mapping[str, Reconstructor], n_rungs: int) -> None:
    for needed in (BASELINE_METHOD, REFERENCE_METHOD):
        if needed not in reconstructors:
            raise MLSimError(
                f"the judge needs method {needed!r} (baseline and reference); "
                f"got {', '.join(reconstructors)}"
            )
    if n_rungs < 1:
        raise MLSimError(f"{n_rungs} ladder rungs; expected at least 1")


def _reconstruct_all(
    photons: np.ndarray,
    reconstructors: Mapping[str, Reconstructor],
    fractions: Sequence[float],
    rng: np.random.Generator,
    sr_px_um: float | None,
    *,
    name: str,
    progress: bool,
) -> tuple[dict[str, FRCResult], dict[float, dict[str, np.ndarray]], dict[str, list[float | str]]]:
    """Every method's split-half FRC, its reconstruction of every rung of the photon ladder
    (``fractions``, full dose first: nested thinning of the same photons), and per method the
    inputs it sent to its fallback (dose fractions, ``"halves"`` for the FRC halves)."""
    from tqdm import tqdm

    names = list(reconstructors)
    fallbacks: dict[str, list[float | str]] = {m: [] for m in names}
    bar = tqdm(
        total=len(names) * (2 + len(fractions)),
        desc=f"judge {name}",
        unit="recon",
        disable=not progress,
        leave=False,
    )

    def run(method: str, data: np.ndarray, dose: float | None = None) -> np.ndarray:
        rec = reconstructors[method]
        before = _fallback_count(rec)
        img = np.asarray(rec.reconstruct(data), dtype=np.float32)
        if _fallback_count(rec) > before:
            fallbacks[method].append("halves" if dose is None else dose)
        bar.update(1)
        return img

    try:
        # split-half FRC
        half1, half2 = split_photons(photons, rng)
        frcs = {m: frc_curve(run(m, half1), run(m, half2), sr_px_um) for m in names}
        # photon ladder: nested thinning of the same photons
        rungs: list[tuple[float, np.ndarray]] = [(1.0, photons)]
        current = photons
        for fraction in fractions[1:]:
            current = thin_photons(current, 0.5, rng)
            rungs.append((fraction, current))
        images: dict[float, dict[str, np.ndarray]] = {}
        for fraction, data in rungs:
            images[fraction] = {m: run(m, data, fraction) for m in names}
    finally:
        bar.close()
    return frcs, images, fallbacks


def _fallback_count(reconstructor: Reconstructor) -> int:
    """Groups the reconstructor has sent to its fallback so far (0 when it has none)."""
    if isinstance(reconstructor, SupportsFallback):
        return int(reconstructor.fallback_groups)
    return 0


def _ladder_scores(
    images: dict[float, dict[str, np.ndarray]], band: Band, peak_photons: float
) -> list[LadderScore]:
    """Every rung of every method against the full-dose reference, flagged where below the
    baseline."""
    reference = images[1.0][REFERENCE_METHOD]
    scores: list[LadderScore] = []
    for fraction, by_method in images.items():
        for m, img in by_method.items():
            scores.append(
                score_rung(
                    m,
                    img,
                    reference,
                    band,
                    fraction,
                    peak_photons * fraction,
                    is_reference=(m == REFERENCE_METHOD and fraction == 1.0),
                )
            )
    return flag_below_widefield(scores, BASELINE_METHOD)


def _expected_limits(
    fc_px: float, k_px: float, pixel_size_um: float | None
) -> dict[str, float | None]:
    """Widefield and SIM resolution limits, in pixels and (with a pixel size) in nm."""
    expected: dict[str, float | None] = {
        "widefield_limit_px": 2.0 / fc_px,
        "sim_limit_px": 2.0 / (fc_px + k_px),
    }
    if pixel_size_um is not None:
        expected["widefield_limit_nm"] = pixel_size_um * 1e3 / fc_px
        expected["sim_limit_nm"] = pixel_size_um * 1e3 / (fc_px + k_px)
    return expected


def _measure_all_beads(
    images: dict[str, np.ndarray],
    fc_px: float,
    k_px: float,
    sr_px_um: float | None,
    pixel_size_um: float | None,
    bead_diameter_nm: float | None,
    expected: dict[str, float | None],
) -> dict[str, BeadStats]:
    """Beads per method; isolated beads chosen on the reference, fitted in every image."""
    # sizes on the 2x grid: cutoffs per camera pixel halve
    wf_fwhm_px = 1.03 / (fc_px / 2)
    sim_fwhm_px = 1.03 / ((fc_px + k_px) / 2)
    half_width = max(3, round(1.2 * wf_fwhm_px))
    separation = max(2.0, 0.8 * sim_fwhm_px)
    ref = images[REFERENCE_METHOD]
    centers = isolated(find_beads(ref, separation), ref.shape, 2.0 * wf_fwhm_px)
    log.info("beads: %d isolated beads on the reference", len(centers))
    if sr_px_um is not None and pixel_size_um is not None:
        diameter = bead_diameter_nm or 0.0
        fc_um = fc_px / pixel_size_um
        k_um = k_px / pixel_size_um
        hw_nm = half_width * sr_px_um * 1e3
        expected["bead_diameter_nm"] = bead_diameter_nm
        expected["bead_fwhm_widefield_nm"] = expected_bead_fwhm_nm(
            diameter, fc_um, pixel_size_um, hw_nm
        )
        expected["bead_fwhm_sim_nm"] = expected_bead_fwhm_nm(diameter, fc_um + k_um, None, hw_nm)
    return {
        m: measure_beads(img, centers, half_width, separation, sr_px_um)
        for m, img in images.items()
    }


def judge_stack(
    path: str | Path,
    methods: Sequence[str] | None = None,
    *,
    model: str | Path | None = None,
    reconstructors: Mapping[str, Reconstructor] | None = None,
    group_index: int = 0,
    n_rungs: int = DEFAULT_RUNGS,
    seed: int = 0,
    progress: bool = False,
) -> StackJudgement:
    """Judge methods on one raw SIM stack (TIFF) with its optional ``<stem>.json`` sidecar.

    Optics come from the sidecar, else from the file's own metadata (pixel size; NA and
    emission wavelength of an OME-TIFF); without them the OTF is estimated from the data.

    Parameters
    ----------
    path : path-like
        The raw stack.
    methods : sequence of str, optional
        Method names for `mlsim_live.recon.make_reconstructor` (default `default_methods`);
        widefield and Wiener are always added.
    model : path-like, optional
        Model file for the learned methods (default: each method's default model).
    reconstructors : mapping, optional
        Ready reconstructors by name instead of ``methods`` (e.g. a model under test).
    group_index : int
        Which group of a multi-group stack to judge.
    n_rungs, seed, progress
        As in `judge_group`.

    Returns
    -------
    StackJudgement
    """
    from mlsim_live.io import read_raw_stack

    info: StackInfo = read_stack_info(path)
    with read_raw_stack(info.path, order=info.frame_order) as stack:
        if not 0 <= group_index < stack.n_groups:
            raise MLSimError(
                f"{info.path}: group {group_index} asked for; expected 0 to {stack.n_groups - 1}"
            )
        group = np.asarray(stack.group(group_index))
        pixel_size_um = info.pixel_size_um or stack.pixel_size_um
        optics = info.optics
        if optics is None and stack.na and stack.wavelength_nm and pixel_size_um:
            # no sidecar optics: the file's own (OME) metadata
            optics = Optics(
                na=stack.na, wavelength_nm=stack.wavelength_nm, pixel_size_um=pixel_size_um
            )
    if reconstructors is None:
        names = tuple(methods) if methods else default_methods(model)
        reconstructors = build_reconstructors(names, model=model, optics=optics)
    return judge_group(
        group,
        reconstructors,
        name=info.name,
        optics=optics,
        pixel_size_um=pixel_size_um,
        sample_kind=info.sample_kind,
        bead_diameter_nm=info.bead_diameter_nm,
        n_rungs=n_rungs,
        seed=seed,
        progress=progress,
    )


def find_stacks(real: str | Path) -> list[Path]:
    """The raw stacks to judge: ``real`` itself when a file, else every TIFF below it."""
    from mlsim_live.io import find_tiffs

    real = Path(real)
    if real.is_file():
        return [real]
    if not real.is_dir():
        raise MLSimError(f"{real}: not found; expected a folder of raw SIM stacks or a TIFF")
    stacks = find_tiffs(real)
    if not stacks:
        raise MLSimError(f"{real}: holds no TIFF; expected raw SIM stacks (*.tif)")
    return stacks


def judge_folder(
    real: str | Path,
    out: str | Path,
    methods: Sequence[str] | None = None,
    *,
    model: str | Path | None = None,
    n_rungs: int = DEFAULT_RUNGS,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> FolderJudgement:
    """Judge every raw stack in ``real`` and write ``out/real_fidelity.json``, ``.md`` and PNGs.

    A stack that cannot be read or judged is reported (log and JSON ``skipped``) and the
    others go on. Existing outputs are never replaced without ``overwrite``; that is checked
    before any work.
    """
    from tqdm import tqdm

    from mlsim_live.errors import one_line
    from mlsim_live.io.atomic import check_writable
    from mlsim_live.judge.report import output_paths, write_report

    started = time.perf_counter()
    out = Path(out)
    paths = find_stacks(real)
    for p in output_paths(out, [p.stem for p in paths]):
        check_writable(p, overwrite)
    names = tuple(methods) if methods else default_methods(model)
    log.info("judging %d stack(s) with %s", len(paths), ", ".join(names))
    judged: list[StackJudgement] = []
    skipped: list[tuple[str, str]] = []
    for path in tqdm(paths, desc="evaluate --real", unit="stack", disable=not progress):
        try:
            judged.append(
                judge_stack(path, names, model=model, n_rungs=n_rungs, seed=seed, progress=progress)
            )
        except MLSimError as exc:
            log.error("%s: not judged: %s", path, one_line(exc))
            skipped.append((str(path), one_line(exc)))
    written = write_report(
        out,
        judged,
        skipped=skipped,
        overwrite=overwrite,
        methods=list(dict.fromkeys([*CLASSICAL_METHODS, *names])),
        model=None if model is None else str(model),
        seed=seed,
        n_rungs=n_rungs,
        seconds=time.perf_counter() - started,
    )
    return FolderJudgement(
        stacks=tuple(judged),
        skipped=tuple(skipped),
        written=tuple(written),
        seconds=time.perf_counter() - started,
    )
