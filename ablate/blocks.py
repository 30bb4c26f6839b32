"""``from ablate.blocks import BasicBlock, register_block``: the door users' block modules were written against
(README, "The blocks"); the blocks live in ``ablate.models``."""

from ablate.models.blocks import *  # noqa: F403 -- the blocks, as ever
from ablate.models.blocks import __all__ as _blocks
from ablate.models.registry import BLOCKS, NAME_PATTERN, get_block, import_block_modules, list_blocks

__all__ = [*_blocks, "BLOCKS", "NAME_PATTERN", "get_block", "import_block_modules", "list_blocks"]
