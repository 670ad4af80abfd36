"""``python -m d4c.figures``: the same program as ``d4c-figures``."""

import sys

from d4c.figures.cli import main

sys.exit(main())
