"""The machine a measurement ran on, in one line (every benchmark record carries it)."""

from __future__ import annotations

import os
import platform

__all__ = ["hardware"]


def hardware() -> str:
    import torch  # here, not at import: the bookkeeping bench never needs it otherwise

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"CPU {platform.processor() or platform.machine()} x{os.cpu_count()}, torch {torch.__version__}"
