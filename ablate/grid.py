"""``python -m ablate.grid``: a door; the command is ``ablate.run.driver`` (its ``--help`` says what it does)."""

import sys

from ablate.run.driver import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
