"""Names shared by the command line and the library (no imports: ``--help`` stays instant)."""

METHODS = ("rcan", "wiener", "widefield")
ORDERS = ("angle-major", "phase-major")
