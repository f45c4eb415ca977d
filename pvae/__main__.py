"""``python -m pvae``: the ``pvae`` command line, for environments without its script on PATH."""

import sys

from pvae.cli import main

sys.exit(main())
