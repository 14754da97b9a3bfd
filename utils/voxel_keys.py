"""Distinct integer voxel indices of point sets, without SciPy (stage 2 downsamples and compares its surfaces with
this alone, and importing SciPy's image and graph modules costs it about half a second on a machine without bytecode
caches)."""
from __future__ import annotations

import numpy as np


def unique_rows(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`np.unique(keys, axis=0, return_inverse=True, return_counts=True)` of integer voxel indices (M, 3): the distinct
    rows (G, 3) in lexicographic order, each row's group (M,) and each group's size (G,). Sorting one int64 key per
    row is several times faster than sorting rows; rows spread too far for such a key fall back to the latter."""
    if len(keys) == 0 or np.prod(np.ptp(keys.astype(np.float64), axis=0) + 1.0) >= 2.0**62:
        rows, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
        return rows, inverse.ravel(), counts
    low = keys.min(axis=0)
    span = keys.max(axis=0) - low + 1
    shifted = keys - low
    linear, inverse, counts = np.unique((shifted[:, 0] * span[1] + shifted[:, 1]) * span[2] + shifted[:, 2],
                                        return_inverse=True, return_counts=True)
    rows = np.stack([linear // (span[1] * span[2]), linear // span[2] % span[1], linear % span[2]], axis=1) + low
    return rows, inverse.ravel(), counts
