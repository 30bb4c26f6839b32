"""``python -m ablate.slurm``: a door; the command is ``ablate.run.slurm`` (its ``--help`` says what it does)."""

import sys

from ablate.run.slurm import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
