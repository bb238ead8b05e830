"""``python -m mlsim_live``: the same as the ``mlsim-live`` command."""

import sys

from mlsim_live.cli import main

sys.exit(main())
