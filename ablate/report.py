"""``python -m ablate.report``: a door; the command is ``ablate.run.report`` (its ``--help`` says what it does)."""

import sys

from ablate.run.report import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
