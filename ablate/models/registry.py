"""The block registry and the depth rule: what an experiment may name, known without torch.

A config names blocks and depths; checking them must not cost torch's import (the driver's bookkeeping, the
study and the report never build a model).  The built-in blocks are known here by name (``BUILTIN``; a test
holds it to what ``ablate.models.blocks`` registers, in that order), and their classes are imported only when
a model is built (``get_block``), as timm's torch-free ``_registry.py`` keeps model names apart from models.
A user's ``@register_block`` class joins when its module is imported (``import_block_modules``).
"""

from __future__ import annotations

import importlib
import re
import sys
from typing import Callable, Dict, List, Optional, Type

__all__ = [
    "BLOCKS",
    "BUILTIN",
    "NAME_PATTERN",
    "register_block",
    "import_block_modules",
    "list_blocks",
    "get_block",
    "check_block",
    "valid_depth",
]

# The registered classes by name, in registration order (the built-in ones once their module is imported).
BLOCKS: Dict[str, Type] = {}
# The built-in blocks, in the order ``BUILTIN_MODULE`` registers them: every experiment's default ``blocks``.
BUILTIN = ("baseline", "identity_scale", "residual_norm", "fusion", "skipinit", "zero_gamma", "branch_scale", "rezero")
BUILTIN_MODULE = "ablate.models.blocks"

MAX_NAME = 64
# A block's name names trials, their directories and W&B runs, and CSV cells.
NAME_PATTERN = rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_NAME - 1}}}"


def register_block(name: str) -> Callable[[Type], Type]:
    """Class decorator: register a block under ``name``; a duplicate name (a built-in one too) is an error."""

    def deco(cls: Type) -> Type:
        if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
            raise ValueError(
                f"block name {name!r} must be 1-{MAX_NAME} letters, digits, '_', '.', '-' "
                "(starting with a letter or digit)"
            )
        builtin = name in BUILTIN and cls.__module__ == BUILTIN_MODULE
        if name in BLOCKS or (name in BUILTIN and not builtin):
            owner = BLOCKS[name].__name__ if name in BLOCKS else "ablate's built-in block"
            raise ValueError(f"block name {name!r} is already registered (by {owner}); choose another name")
        BLOCKS[name] = cls
        cls.block_name = name
        return cls

    return deco


def import_block_modules(names, search_path: Optional[str] = None) -> None:
    """Import a user's modules, whose ``@register_block`` classes then join the registry.

    ``search_path`` (the experiment file's directory) is tried first for these modules alone, so a
    ``my_blocks.py`` beside the experiment is found, while any other file there (a ``filelock.py``)
    never shadows a module ablate imports: the path is on ``sys.path`` only while they import.  A
    module already imported is not imported again.
    """
    names = list(names)
    if not names:
        return
    added = bool(search_path) and search_path not in sys.path
    if added:
        sys.path.insert(0, search_path)
    try:
        for name in names:
            importlib.import_module(name)
    finally:
        if added and search_path in sys.path:
            sys.path.remove(search_path)


def list_blocks() -> List[str]:
    """The block names an experiment may use: the built-in ones, then the user's, in registration order."""
    return [*BUILTIN, *(n for n in BLOCKS if n not in BUILTIN)]


def check_block(name: str) -> str:
    """``name`` if it is a block an experiment may use, else ``ValueError`` listing the valid ones (no torch)."""
    if not isinstance(name, str) or name not in list_blocks():
        raise ValueError(f"unknown block {name!r}; valid blocks: {', '.join(list_blocks())}")
    return name


def get_block(name: str) -> Type:
    """The block class registered as ``name`` (the built-in ones are imported here, with torch)."""
    check_block(name)
    if name not in BLOCKS:
        importlib.import_module(BUILTIN_MODULE)
    return BLOCKS[name]


def valid_depth(depth: int) -> bool:
    """Whether ``create_model`` builds a CIFAR ResNet of ``depth``: 6n+2, n >= 1 (He et al. 2016, sec. 4.2)."""
    return isinstance(depth, int) and not isinstance(depth, bool) and depth >= 8 and (depth - 2) % 6 == 0
