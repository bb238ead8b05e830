"""SIM reconstruction: the Reconstructor seam, classical reconstructions (widefield, Wiener) and
`make_reconstructor`, which builds any of them (the ONNX RCAN included) by name."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlsim_live.constants import DEFAULT_LEARNED_METHOD, LEARNED_METHODS, METHODS
from mlsim_live.errors import MLSimError
from mlsim_live.recon.base import Reconstructor

if TYPE_CHECKING:  # pragma: no cover
    from mlsim_live.sim.optics import Optics


log = logging.getLogger(__name__)

__all__ = [
    "METHODS",
    "Reconstructor",
    "default_method",
    "make_reconstructor",
    "make_stream_reconstructor",
]


def make_reconstructor(
    method: str,
    *,
    model: str | Path | None = None,
    optics: Optics | None = None,
    offset_adu: float | None = None,
    precision: str | None = None,
    **kw: Any,
) -> Reconstructor:
    """Build a reconstructor by name.

    Parameters
    ----------
    method : {"rcan", "wiener-rcan", "wiener", "widefield"}
        ``"rcan"``: the end-to-end ONNX RCAN (ML-SIM) on ONNX Runtime; ``"wiener-rcan"``: the
        Wiener reconstruction refined by a prior-fed RCAN
        (`mlsim_live.engine.prior.WienerRCANReconstructor`); ``"wiener"``: classical SIM with
        pattern estimation (`mlsim_live.recon.wiener.WienerReconstructor`); ``"widefield"``: the
        mean of the frames upsampled 2x.
    model : str or Path, optional
        The ``.onnx`` model for ``"rcan"`` (None: the default model); ignored otherwise.
    optics : Optics, optional
        NA, emission wavelength and pixel size, when known.
    offset_adu : float, optional
        Background to subtract; each reconstructor estimates it when omitted.
    precision : {"auto", "fp32", "int8", "bf16"}, optional
        Arithmetic of the learned methods (`mlsim_live.engine.precision`; default ``auto``);
        checked but without effect on the classical methods.
    **kw
        Passed on to the reconstructor's constructor, e.g. ``reuse_estimate=True`` or
        ``wiener_w=0.1`` for ``"wiener"``, ``provider=...`` for ``"rcan"``.

    Returns
    -------
    Reconstructor

    Raises
    ------
    MLSimError
        For an unknown method, or ``"rcan"`` without its runtime installed.
    """
    name = str(method).lower()
    if precision is not None:
        from mlsim_live.engine.precision import check_precision_name

        precision = check_precision_name(precision)
        if name in LEARNED_METHODS:
            kw["precision"] = precision
    if name == "widefield":
        from mlsim_live.recon.widefield import WidefieldReconstructor

        return WidefieldReconstructor(offset_adu=offset_adu, **kw)
    if name == "wiener":
        from mlsim_live.recon.wiener import WienerReconstructor

        return WienerReconstructor(optics=optics, offset_adu=offset_adu, **kw)
    if name in LEARNED_METHODS:
        name = resolve_method(name, model)
        try:
            if name == "wiener-rcan":
                from mlsim_live.engine.prior import WienerRCANReconstructor

                return WienerRCANReconstructor(
                    model=model, optics=optics, offset_adu=offset_adu, **kw
                )
            from mlsim_live.engine.rcan import RCANReconstructor

            kw.pop("reuse_estimate", None)  # the end-to-end model estimates nothing
            return RCANReconstructor(model=model, optics=optics, offset_adu=offset_adu, **kw)
        except ImportError as exc:
            raise MLSimError(
                f"method {name!r} needs ONNX Runtime (install mlsim-live[cpu] or [gpu]): {exc}"
            ) from exc
    raise MLSimError(
        f"reconstruction method {method!r} is unknown; expected one of {', '.join(METHODS)}"
    )


def resolve_method(method: str, model: str | os.PathLike[str] | None = None) -> str:
    """``method``, except that ``rcan`` with a prior-fed model (its card says
    ``"prior": "wiener"``) is ``wiener-rcan``: the model decides what it needs."""
    name = str(method).lower()
    if name == "rcan" and model is not None and Path(model).is_file():
        from mlsim_live.engine.rcan import model_prior

        if model_prior(Path(model)) == "wiener":
            log.info("model %s is prior-fed; reconstructing with wiener-rcan", Path(model).name)
            return "wiener-rcan"
    return name


def make_stream_reconstructor(method: str, **kw: Any) -> Reconstructor:
    """Build a reconstructor for one acquisition's stream of groups (live, demo, replay).

    As `make_reconstructor`, except that Wiener estimates the pattern on the first group and
    reuses it (``reuse_estimate=True``): the pattern of one instrument does not drift within an
    acquisition, and estimation costs far more than the reconstruction. Live and replay share
    this rule, so a replay reproduces a live run bit for bit.
    """
    if str(method).lower() in ("wiener", "wiener-rcan") or (
        str(method).lower() == "rcan" and resolve_method(method, kw.get("model")) != "rcan"
    ):
        kw.setdefault("reuse_estimate", True)
    return make_reconstructor(method, **kw)


def default_method(
    method: str | None, model: str | os.PathLike[str] | None = None, *, warn: bool = True
) -> str:
    """``method``, or when None: the learned method of the given model, else the default
    learned method (`DEFAULT_LEARNED_METHOD`) when its model is installed, else ``wiener``.

    The rule of the ``reconstruct``, ``replay``, ``demo`` and ``live`` commands and of
    `SIMProcessor`; the Wiener fallback is logged as a warning unless ``warn`` is False.
    """
    if method is not None:
        return method
    from mlsim_live import paths

    if model is not None:
        return resolve_method("rcan", model)
    if paths.has_default_model():
        return DEFAULT_LEARNED_METHOD
    if warn:
        log.warning(
            "no default model installed (%s in %s); reconstructing with method wiener",
            paths.MODEL_NAMES[DEFAULT_LEARNED_METHOD],
            paths.models_dir(),
        )
    return "wiener"
