"""Seeds and determinism flags, set once for every notebook and test."""
from __future__ import annotations

import os
import random

import numpy as np


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    try:
        import torch
    except ImportError:  # data-only use of the library
        return
    torch.manual_seed(seed)
    # warn_only: a few CPU kernels have no deterministic variant; they warn instead of failing.
    torch.use_deterministic_algorithms(True, warn_only=True)
