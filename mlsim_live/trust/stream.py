"""Trust maps for the groups of one acquisition: pattern and camera noise measured once."""

from __future__ import annotations

import logging

import numpy as np

from mlsim_live.errors import MLSimError
from mlsim_live.recon.estimate import GroupEstimate, as_group, estimate_pattern
from mlsim_live.sim.optics import Optics
from mlsim_live.trust.map import CameraNoise, TrustMapper, TrustResult, TrustSettings

log = logging.getLogger(__name__)


class TrustStream:
    """Trust maps of a stream of reconstructions against their raw groups.

    The pattern is estimated on the first group where it is found (every angle's correlation
    peak clear, as `mlsim_live.recon.wiener.pattern_found` decides) and reused for later groups
    of the same frame size, with the camera noise and the fitted transfer: the instrument does
    not change within an acquisition, and estimation costs far more than a map. Groups before
    that are each estimated on their own.

    Parameters
    ----------
    optics : Optics, optional
        NA, emission wavelength and pixel size (the OTF); estimated from the data otherwise.
    settings : TrustSettings, optional
    offset_adu : float, optional
        Camera offset for the pattern estimate (estimated when omitted).
    estimate : GroupEstimate, optional
        A pattern estimate to use for every group instead of estimating one.
    noise : CameraNoise, optional
        The camera noise, instead of fitting it on the first group.
    workers : int
        Threads for scipy.fft.
    """

    def __init__(
        self,
        optics: Optics | None = None,
        settings: TrustSettings | None = None,
        *,
        offset_adu: float | None = None,
        estimate: GroupEstimate | None = None,
        noise: CameraNoise | None = None,
        workers: int = -1,
    ) -> None:
        self.optics = optics
        self.settings = settings or TrustSettings()
        self.offset_adu = offset_adu
        self.workers = workers
        self._noise = noise
        self._mapper: TrustMapper | None = (
            TrustMapper(estimate, noise, self.settings, workers) if estimate is not None else None
        )
        self._fixed = estimate is not None
        self.groups = 0

    @property
    def estimate(self) -> GroupEstimate | None:
        """The pattern estimate in use (None before the first group)."""
        return self._mapper.estimate if self._mapper is not None else None

    @property
    def noise(self) -> CameraNoise | None:
        """The camera noise in use (None before the first group)."""
        return self._mapper.noise if self._mapper is not None else self._noise

    def compute(self, raw: np.ndarray, sr: np.ndarray) -> TrustResult:
        """Trust map of the reconstruction ``sr`` (2H, 2W) of ``raw`` (9, H, W).

        Raises
        ------
        MLSimError
            For inputs of the wrong shape or with non-finite values, or when a given estimate
            is for another frame size.
        """
        arr = np.asarray(raw)
        frames = as_group(arr, arr.dtype.type)  # shape checked; the mapper takes any real counts
        mapper = self._mapper
        if mapper is None or tuple(mapper.estimate.shape) != frames.shape[1:]:
            if self._fixed and mapper is not None:
                raise MLSimError(
                    f"the pattern estimate is for {mapper.estimate.shape} frames but the group "
                    f"has {frames.shape[1:]}; expected the same frame size"
                )
            mapper = self._new_mapper(frames)
        result = mapper.compute(frames, sr)
        if self._noise is None:
            self._noise = mapper.noise
        self.groups += 1
        return result

    __call__ = compute

    def _new_mapper(self, frames: np.ndarray) -> TrustMapper:
        from mlsim_live.recon.wiener import pattern_found

        est = estimate_pattern(frames, self.optics, offset_adu=self.offset_adu)
        noise = self._noise if self._mapper is None or self._noise is not None else None
        mapper = TrustMapper(est, noise, self.settings, self.workers)
        if pattern_found(est):
            self._mapper = mapper
        else:
            log.warning(
                "trust map: the SIM pattern was hardly found in this group; its residual "
                "reflects the estimate as much as the reconstruction"
            )
        return mapper


__all__ = ["TrustStream"]
