"""``python -m kdistill``: the same as the ``kdistill`` command (and what torchrun launches)."""

import sys

from kdistill.cli import main

sys.exit(main())
