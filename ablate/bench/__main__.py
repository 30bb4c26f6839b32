"""``python -m ablate.bench``: a door; the command is ``ablate.bench.cli``."""

import sys

from ablate.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
