"""ablate: a distributed ablation runner for residual-connection tricks in CIFAR ResNets.

``from ablate import create_model`` pulls in torch on first use, not ``import ablate``: the CLIs
(``python -m ablate.grid``) install their signal handlers before any heavy import, so Ctrl-C in
the first second is handled too.  Ray and W&B are imported by the modules that need them.
"""
from importlib import import_module

__version__ = "0.1.0"
__all__ = ["create_model", "get_block", "list_blocks", "register_block", "valid_depth", "__version__"]
_HOME = {"create_model": "models", "valid_depth": "models", "get_block": "blocks", "list_blocks": "blocks",
         "register_block": "blocks"}


def __getattr__(name):
    if name in _HOME:
        return getattr(import_module(f".{_HOME[name]}", __name__), name)
    raise AttributeError(f"module 'ablate' has no attribute {name!r}")
