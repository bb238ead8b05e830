"""Live SIM reconstruction: frame grouping, the reconstruction worker, sinks and outputs.

Nothing heavy is imported here; ``SIMProcessor`` (Pycro-Manager) lives in
``mlsim_live.live.processor`` and is also exported lazily as ``mlsim_live.SIMProcessor``.
"""

from mlsim_live.live.grouper import CompletedGroup, FrameGrouper, IncompleteGroup
from mlsim_live.live.pipeline import Pipeline
from mlsim_live.live.results import GroupResult
from mlsim_live.live.sinks import Sink
from mlsim_live.live.writer import SRTiffWriter, output_paths, write_summary

__all__ = [
    "CompletedGroup",
    "FrameGrouper",
    "GroupResult",
    "IncompleteGroup",
    "Pipeline",
    "SRTiffWriter",
    "Sink",
    "output_paths",
    "write_summary",
]
