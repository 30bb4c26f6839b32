"""ablate: a distributed ablation runner for residual-connection tricks in CIFAR ResNets.

Importing ``ablate`` pulls in torch only; Ray and W&B are imported by the modules that need them.
"""
from .blocks import get_block, list_blocks, register_block
from .models import create_model, valid_depth

__version__ = "0.1.0"
__all__ = ["create_model", "get_block", "list_blocks", "register_block", "valid_depth", "__version__"]
