"""ablate: a distributed ablation runner for residual-connection tricks in CIFAR ResNets.

The package's map is docs/architecture.md.  ``from ablate import create_model`` pulls in torch on first use, not
``import ablate``: the commands (``python -m ablate.grid``) install their signal handlers before any heavy
import, so Ctrl-C in the first second is handled too, and the driver's bookkeeping never imports torch.
"""

from importlib import import_module

__version__ = "0.1.0"
__all__ = ["create_model", "get_block", "list_blocks", "register_block", "valid_depth", "__version__"]


def __getattr__(name):
    if name in __all__ and name != "__version__":
        return getattr(import_module("ablate.models"), name)
    raise AttributeError(f"module 'ablate' has no attribute {name!r}")
