#!/usr/bin/env python
"""The paper's command, unchanged: ``python d4c/solver/test_quant.py --dataset cifar10 ...``.

Same program as the ``d4c-quant`` console script (``d4c.cli.main``).
"""

import os
import sys

if __package__ in (None, ""):
    # Run as a file: make the repository root importable so `import d4c` finds this checkout.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from d4c.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
