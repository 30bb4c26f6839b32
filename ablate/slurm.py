"""``python -m ablate.slurm``: a door; the command is ``ablate.run.slurm`` (its ``--help`` says what it does)."""

import sys

from ablate.errors import SlurmError
from ablate.run.slurm import batch_script, main, parse_time

__all__ = ["main", "batch_script", "parse_time", "SlurmError"]

if __name__ == "__main__":
    sys.exit(main())
