"""``python -m pvae``: the ``pvae`` command line, for environments without its script on PATH."""

import sys

from pvae.cli import main

if __name__ == "__main__":  # imported (e.g. by a doctest collector), it does nothing
    sys.exit(main())
