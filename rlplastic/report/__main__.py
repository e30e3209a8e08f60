"""``python -m rlplastic.report RUN_DIR... --out DIR``: see :mod:`rlplastic.report.cli`."""

import sys

from rlplastic.report.cli import main

sys.exit(main())
