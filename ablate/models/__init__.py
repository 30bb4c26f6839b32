"""Models: the block library every model is built from, and CIFAR ResNets of depth 6n+2 (torch).

The users' extension point: ``@register_block("name")`` on a ``BasicBlock`` subclass that overrides ``merge``.
The registry (``registry``) needs no torch, so ``import ablate.models`` does not import it either: the blocks and
the ResNet load on first use of their names here (``from ablate.models.resnet import BasicBlock``).
"""

from importlib import import_module

from ablate.models.registry import (
    BLOCKS,
    BUILTIN,
    check_block,
    get_block,
    import_block_modules,
    list_blocks,
    register_block,
    valid_depth,
)

__all__ = [
    "BLOCKS",
    "BUILTIN",
    "BasicBlock",
    "CifarResNet",
    "check_block",
    "create_model",
    "get_block",
    "import_block_modules",
    "list_blocks",
    "register_block",
    "valid_depth",
]
_TORCH = {
    "BasicBlock": "ablate.models.blocks",
    "CifarResNet": "ablate.models.resnet",
    "create_model": "ablate.models.resnet",
}


def __getattr__(name):
    if name in _TORCH:
        return getattr(import_module(_TORCH[name]), name)
    raise AttributeError(f"module 'ablate.models' has no attribute {name!r}")
