"""``python -m d4c.sweep MANIFEST`` is ``d4c-sweep``."""

import sys

from d4c.sweep.cli import main

sys.exit(main())
