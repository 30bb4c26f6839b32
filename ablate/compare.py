"""``python -m ablate.compare``: a door; the command is ``ablate.run.compare`` (its ``--help`` says what it does)."""

import sys

from ablate.run.compare import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
