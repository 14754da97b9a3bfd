"""Which part each canonical sample belongs to: a Potts labelling of the samples given the selected motions.

Label 0 is the static body (the identity motion), label k the k-th selected motion. A sample x costs, under the
motion of label k, what the other state says of T_k x (`Observation.costs`: little where it shows a surface, a
neutral cost where it hides x — a door's inner face once closed, a cabinet's inside behind it — and most where it
sees empty space). Neighbouring samples (26-adjacent voxels) pay `smoothness` for each label they
do not share, so hidden and ambiguous samples (a hinge's neighbourhood, a drawer's tray) follow their surroundings.
Iterated conditional modes minimises the energy to a local optimum from `seeded_labels`: samples that exactly one
label lands are seeds, and every other sample starts with the admissible label of the nearest seed.
"""
from __future__ import annotations

import numpy as np
from scipy.sparse import csr_array
from scipy.spatial import cKDTree

from parts.observation import HIDDEN_COST, Observation
from utils.rigid_fit import apply_transform
from utils.voxel_grid import adjacency

SWEEPS = 10
STATIC_HIDDEN_COST = 0.2


def data_costs(points: np.ndarray, motions: list[np.ndarray], other: Observation, sides: np.ndarray | None = None
               ) -> np.ndarray:
    """(1 + K, N) cost of each sample (N, 3), seen from `sides` (N, 3), under the static body and each
    motion of `motions`. A sample the other
    state hides where it is costs the body only STATIC_HIDDEN_COST: hidden surfaces are the body's by default (a
    cabinet's inside behind closed drawers), unless a neighbourhood moving with a part claims them."""
    static, landed = other.costs(points, sides)
    static = np.where((static == HIDDEN_COST) & ~landed, STATIC_HIDDEN_COST, static)
    return np.stack([static, *(other.costs(apply_transform(T, points), turn(T, sides))[0] for T in motions)])


def turn(T: np.ndarray, sides: np.ndarray | None) -> np.ndarray | None:
    """Directions (N, 3) (or None) turned by T's rotation."""
    return None if sides is None else sides @ T[:3, :3].T


def seeded_labels(costs: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N,) a starting labelling of the samples (N, 3) under `costs` (L, N): a sample that exactly one label lands
    (cost below HIDDEN_COST) is a seed of it; every other sample takes, among its admissible labels (those that land
    or hide it), the one with the nearest seed, or its cheapest label when none is admissible. A hidden sample
    carries no evidence of its own, so it follows the unambiguous surface nearest to it (a drawer's tray its front)."""
    landed = costs < HIDDEN_COST
    seed = landed & (landed.sum(axis=0) == 1)[None]
    admissible = costs <= HIDDEN_COST
    distance = np.full(costs.shape, np.inf)
    for k in range(len(costs)):
        if seed[k].any():
            distance[k] = cKDTree(points[seed[k]]).query(points)[0]
    distance[~admissible] = np.inf
    labels = np.argmin(distance, axis=0)
    return np.where(np.isfinite(distance.min(axis=0)), labels, np.argmin(costs, axis=0))


def potts_labels(costs: np.ndarray, voxels: np.ndarray, smoothness: float, start: np.ndarray) -> np.ndarray:
    """(N,) labels minimising sum of `costs` (L, N) plus `smoothness` per disagreeing pair of 26-adjacent `voxels`
    (N, 3), by iterated conditional modes from the labels `start` (N,)."""
    labels = start.copy()
    if len(voxels) < 2 or smoothness <= 0:
        return labels
    graph = adjacency(voxels)
    graph = csr_array(graph + graph.T)
    graph.data[:] = 1.0
    degree = np.asarray(graph.sum(axis=1)).ravel()
    for _ in range(SWEEPS):
        onehot = np.zeros((len(labels), len(costs)))
        onehot[np.arange(len(labels)), labels] = 1.0
        agree = graph @ onehot  # (N, L) neighbours carrying each label
        energy = costs.T + smoothness * (degree[:, None] - agree)
        new = np.argmin(energy, axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
    return labels
