"""``python -m ablate.report``: a door; the command is ``ablate.run.report`` (its ``--help`` says what it does)."""

import sys

from ablate.run.report import main, write_report

__all__ = ["main", "write_report"]

if __name__ == "__main__":
    sys.exit(main())
