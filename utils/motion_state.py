"""Which joint state has the larger motion: the state whose movable parts are more displaced or exposed.

Stage 2 picks the canonical state c this way. A state's "excess" is how much of its surface lies away
from the other state's surface:
1. voxel-downsample each state's points (so density does not count, only occupied space);
2. drop isolated voxels (floaters): those whose 4th nearest voxel is more than 3x the state's median such distance
   away; surfaces, however sparsely or patchily sampled, keep their voxels;
3. for each remaining voxel, the distance to the nearest remaining voxel of the other state, capped at 30 voxels;
4. SUM over the voxels. The state with the larger excess has the parts open.

Why the sum and not the mean: opening a part exposes surface the closed state does not show (a drawer's sides and
interior, the inside of a door and the cavity behind it), so the open state has both more far-away voxels and
farther ones; the sum counts both effects, the mean only the second. Why the floater removal and a cap of 30 voxels:
the opaque surfels of a coarse model cover a surface in patches a few voxels apart, so a small cap lets that sampling
noise dominate; a large cap alone lets floaters count; removing isolated voxels first keeps both in check.
tests/test_coarse.py checks the choice on visible surfaces and on noisy, floater-ridden ones.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from utils.neighbours import query
from utils.point_cloud import checked_points
from utils.voxel_keys import unique_rows

DEFAULT_VOXEL_SIZE = 0.01
DEFAULT_CAP_VOXELS = 30.0
ISOLATION_NEIGHBOURS = 4  # a voxel is isolated when its 4th nearest voxel is ...
ISOLATION_FACTOR = 3.0  # ... more than 3x the median 4th-nearest distance away


def voxel_centres(points: np.ndarray, voxel_size: float) -> np.ndarray:
    """(V, 3) centres of the distinct voxels of edge `voxel_size` occupied by `points` (N, 3)."""
    keys = unique_rows(np.floor(points / voxel_size).astype(np.int64))[0]
    return (keys + 0.5) * voxel_size


def remove_isolated(centres: np.ndarray, neighbours: int = ISOLATION_NEIGHBOURS,
                    factor: float = ISOLATION_FACTOR) -> np.ndarray:
    """The voxel centres (V, 3) whose `neighbours`-th nearest other centre is within `factor` x the median of that
    distance (all of them when there are too few to judge)."""
    if len(centres) <= neighbours:
        return centres
    distances, _ = query(cKDTree(centres), centres, k=neighbours + 1)
    kth = distances[:, -1]
    return centres[kth <= factor * np.median(kth)]


def motion_excesses(points_0: np.ndarray, points_1: np.ndarray, voxel_size: float = DEFAULT_VOXEL_SIZE,
                    cap_voxels: float = DEFAULT_CAP_VOXELS) -> tuple[float, float]:
    """Excess of state 0 over state 1 and of state 1 over state 0 (scene units x voxels) from points (N, 3), (M, 3)."""
    points_0, points_1 = checked_points(points_0, "points_0"), checked_points(points_1, "points_1")
    if not voxel_size > 0 or not cap_voxels > 0:
        raise ValueError(f"voxel_size and cap_voxels must be positive, got {voxel_size} and {cap_voxels}")
    voxels = [remove_isolated(voxel_centres(points, voxel_size)) for points in (points_0, points_1)]
    cap = cap_voxels * voxel_size
    excess = [float(np.minimum(query(cKDTree(other), own, k=1)[0], cap).sum())
              for own, other in ((voxels[0], voxels[1]), (voxels[1], voxels[0]))]
    return excess[0], excess[1]


def larger_motion_state(points_0: np.ndarray, points_1: np.ndarray, voxel_size: float = DEFAULT_VOXEL_SIZE,
                        cap_voxels: float = DEFAULT_CAP_VOXELS) -> int:
    """0 or 1: the state whose points (N, 3) / (M, 3) have the larger excess over the other's (ties -> 0)."""
    excess_0, excess_1 = motion_excesses(points_0, points_1, voxel_size, cap_voxels)
    return int(excess_1 > excess_0)
