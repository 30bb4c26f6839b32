"""``python -m ablate.compare``: a door; the command is ``ablate.run.compare`` (its ``--help`` says what it does)."""

import sys

from ablate.analysis.compare import EXIT_CHANGED, EXIT_OPEN, EXIT_SAME, Side, compare
from ablate.errors import GrowthFailed
from ablate.run.compare import main

EXIT_GROWTH_FAILED = GrowthFailed.code
__all__ = ["main", "compare", "Side", "EXIT_SAME", "EXIT_CHANGED", "EXIT_OPEN", "EXIT_GROWTH_FAILED"]

if __name__ == "__main__":
    sys.exit(main())
