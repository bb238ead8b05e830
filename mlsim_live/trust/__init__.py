"""Trust maps: where a SIM reconstruction is not supported by the raw frames it came from.

`TrustMapper` computes the map of one reconstruction for a given pattern estimate;
`TrustStream` does so for a stream of groups (estimate and camera noise measured once);
`mlsim_live.trust.output` writes maps, overlays and figures to files.
"""

from mlsim_live.trust.map import (
    FLAG_LEVEL,
    RESOLUTIONS,
    CameraNoise,
    TrustFigures,
    TrustMapper,
    TrustResult,
    TrustSettings,
    estimate_noise,
    trust_map,
)
from mlsim_live.trust.stream import TrustStream

__all__ = [
    "FLAG_LEVEL",
    "RESOLUTIONS",
    "CameraNoise",
    "TrustFigures",
    "TrustMapper",
    "TrustResult",
    "TrustSettings",
    "TrustStream",
    "estimate_noise",
    "trust_map",
]
