"""mlsim-live: live ML super-resolution for structured illumination microscopy (SIM).

Heavy dependencies (onnxruntime, pycromanager, Qt, torch) are imported lazily, so importing
this package and running ``mlsim-live --help`` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlsim_live.errors import MLSimError

__version__ = "0.1.0"
__all__ = ["MLSimError", "SIMProcessor", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from mlsim_live.live.processor import SIMProcessor


def __getattr__(name: str) -> Any:
    if name == "SIMProcessor":
        from mlsim_live.live.processor import SIMProcessor

        return SIMProcessor
    raise AttributeError(f"module 'mlsim_live' has no attribute {name!r}")
