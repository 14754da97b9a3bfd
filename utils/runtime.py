"""Process-wide run settings: seeding every random generator and choosing the device."""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int, device: torch.device) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator for view/background sampling.

    On the CPU torch also runs its deterministic algorithms, so that a seed gives the same run with any number of
    threads (the renderer's backward otherwise accumulates per-surfel gradients in a thread-dependent order: 1e-10
    differences that grow over a run). On CUDA they stay off: gsplat's kernels sum with atomics. The switch is only
    called when it changes something: it imports torch._inductor and torch._dynamo (1-2 s, and 5 s on a machine
    without compiled bytecode caches).
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif torch.are_deterministic_algorithms_enabled():
        torch.use_deterministic_algorithms(False)
    return torch.Generator().manual_seed(seed)


def pick_device(requested: str) -> torch.device:
    """`requested` if usable, else the CPU (so CPU-only machines run every stage)."""
    if requested.startswith("cuda") and not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device(requested)
