"""Names shared by the command line and the library (no imports: ``--help`` stays instant)."""

METHODS = ("rcan", "wiener-rcan", "wiener", "widefield")
#: Methods that run a learned model (``--model`` applies to them).
LEARNED_METHODS = ("rcan", "wiener-rcan")
#: The learned method used when none is named and its shipped model is installed.
DEFAULT_LEARNED_METHOD = "wiener-rcan"
ORDERS = ("angle-major", "phase-major")
#: Queue policies of the live worker: ``latest`` drops the oldest waiting groups, ``all`` none.
POLICIES = ("latest", "all")
#: Acquisition engines of ``demo`` and ``live``; the first is the default.
ENGINES = ("pycromanager", "pymmcore-plus")

#: Pattern angles and phases of one SIM group; a group is ``GROUP_SIZE`` raw frames, angle-major.
N_ANGLES = 3
N_PHASES = 3
GROUP_SIZE = N_ANGLES * N_PHASES
