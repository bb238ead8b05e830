"""Names shared by the command line and the library (no imports: ``--help`` stays instant)."""

METHODS = ("rcan", "wiener-rcan", "wiener", "widefield")
#: Methods that run a learned model (``--model`` applies to them).
LEARNED_METHODS = ("rcan", "wiener-rcan")
#: The learned method used when none is named and its shipped model is installed.
DEFAULT_LEARNED_METHOD = "rcan"
ORDERS = ("angle-major", "phase-major")
