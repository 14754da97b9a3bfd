"""A dense voxel grid shared by the two joint states: occupancy, connected components, adjacency.

Voxel `(i, j, k)` covers the cube `origin + [i, i+1) x [j, j+1) x [k, k+1) * voxel_size`; its centre is
`origin + (index + 0.5) * voxel_size`. Everything is vectorised over voxels (scipy.ndimage on
the dense grid); no Python loop visits voxels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_array, csr_array


# A grid larger than this many cells (bool, plus int32 labels) would need gigabytes: ask for a larger voxel instead.
MAX_CELLS = 400_000_000
FULL_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)  # 26-connected neighbourhood
# One offset of each +-pair of the 26 neighbours: every voxel adjacency is found once.
HALF_NEIGHBOURS = np.array([o for o in np.ndindex(3, 3, 3) if o > (1, 1, 1)]) - 1


@dataclass(frozen=True)
class VoxelGrid:
    """Axis-aligned grid: `origin` (3,) world corner of voxel (0, 0, 0), cubic voxels of edge `voxel_size`."""

    origin: np.ndarray
    voxel_size: float
    shape: tuple[int, int, int]

    @classmethod
    def around(cls, point_sets: list[np.ndarray], voxel_size: float, padding: int = 3) -> "VoxelGrid":
        """The grid that holds every point of `point_sets` (each (N_i, 3)) with `padding` empty voxels around them."""
        if voxel_size <= 0:
            raise ValueError(f"voxel_size must be positive, got {voxel_size}")
        points = [np.asarray(p, dtype=np.float64).reshape(-1, 3) for p in point_sets]
        if sum(len(p) for p in points) == 0:
            raise ValueError("cannot build a voxel grid around zero points")
        lo = np.min([p.min(axis=0) for p in points if len(p)], axis=0)
        hi = np.max([p.max(axis=0) for p in points if len(p)], axis=0)
        origin = np.floor(lo / voxel_size - padding) * voxel_size
        shape = tuple(int(n) for n in np.floor((hi - origin) / voxel_size).astype(np.int64) + 1 + padding)
        cells = int(np.prod(shape, dtype=np.int64))
        if cells > MAX_CELLS:
            raise ValueError(f"the points span {np.round(hi - lo, 3).tolist()} scene units: a grid of {shape} voxels "
                             f"of size {voxel_size} is too large ({cells} cells > {MAX_CELLS}); use a larger "
                             "--voxel_size or remove far-away floaters")
        return cls(origin, float(voxel_size), shape)

    def indices(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) int64 index of the voxel holding each point (N, 3); may lie outside the grid."""
        return np.floor((np.asarray(points, dtype=np.float64) - self.origin) / self.voxel_size).astype(np.int64)

    def centres(self, indices: np.ndarray) -> np.ndarray:
        """(M, 3) world centres of the voxels `indices` (M, 3)."""
        return self.origin + (np.asarray(indices, dtype=np.float64) + 0.5) * self.voxel_size

    def inside(self, indices: np.ndarray) -> np.ndarray:
        """(M,) bool: which voxel `indices` (M, 3) lie inside the grid."""
        return np.all((indices >= 0) & (indices < np.asarray(self.shape)), axis=1)

    def keys(self, indices: np.ndarray) -> np.ndarray:
        """(M,) flat (raveled) index of each voxel of `indices` (M, 3), all inside the grid: voxel sets as 1-D keys."""
        return np.ravel_multi_index(tuple(np.asarray(indices).T), self.shape)

    def lookup(self, grid: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """(M,) values of the dense `grid` at voxel `indices` (M, 3); False (zero) outside the grid."""
        values = np.zeros(len(indices), dtype=grid.dtype)
        ok = self.inside(indices)
        values[ok] = grid[tuple(indices[ok].T)]
        return values

    def mask(self, indices: np.ndarray) -> np.ndarray:
        """Dense bool grid that is True at the voxel `indices` (M, 3) (those outside the grid are dropped)."""
        grid = np.zeros(self.shape, dtype=bool)
        indices = indices[self.inside(indices)]
        grid[tuple(indices.T)] = True
        return grid

    def occupancy(self, points: np.ndarray) -> np.ndarray:
        """Dense bool grid of the voxels that hold at least one of `points` (N, 3)."""
        return self.mask(self.indices(points))


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """`mask` grown by a Chebyshev `radius` (a (2r+1)^3 cube); radius 0 returns it unchanged."""
    if radius <= 0:
        return mask
    return ndimage.binary_dilation(mask, structure=np.ones((2 * radius + 1,) * 3, dtype=bool))


def connected_components(mask: np.ndarray, min_size: int = 1) -> list[np.ndarray]:
    """26-connected components of `mask` with at least `min_size` voxels, largest first, as (M_k, 3) int64 indices.

    Ties in size are broken by scipy's label order, so the result is deterministic.
    """
    labels, count = ndimage.label(mask, structure=FULL_CONNECTIVITY)
    if count == 0:
        return []
    coords = np.argwhere(labels)
    comp = labels[tuple(coords.T)]
    order = np.argsort(comp, kind="stable")
    sizes = np.bincount(comp, minlength=count + 1)[1:]
    groups = np.split(coords[order], np.cumsum(sizes)[:-1])
    ranking = np.argsort(-sizes, kind="stable")
    return [groups[i].astype(np.int64) for i in ranking if sizes[i] >= min_size]


def enclosed(occupancy: np.ndarray, min_directions: int = 5, close_radius: int = 1) -> np.ndarray:
    """Dense bool grid of the free cells enclosed by `occupancy`: cells more than `close_radius` voxels from it
    (Chebyshev) such that along at least `min_directions` of the six axis directions (+-x, +-y, +-z) an occupied
    cell lies beyond them.

    The occupancy is dilated by `close_radius` first so rays do not slip through the gaps between sparse samples;
    the cells of that band are not free (they are near a surface, where landing tests decide). It tells a surface
    hidden inside the other state's shell (a cabinet's inside, seen only when its door is open) from a part that
    moved into open space; one free direction is allowed by default because captures rarely see an object's
    underside.
    """
    solid = dilate(occupancy, close_radius)
    hits = np.zeros(solid.shape, dtype=np.uint8)
    for axis in range(3):
        hits += np.logical_or.accumulate(solid, axis=axis)
        hits += np.flip(np.logical_or.accumulate(np.flip(solid, axis=axis), axis=axis), axis=axis)
    return (hits >= min_directions) & ~solid


def adjacency(voxels: np.ndarray) -> csr_array:
    """(M, M) sparse graph of the 26-neighbour adjacencies within the voxel set `voxels` (M, 3), each pair stored once
    (in one of its two directions), weighted by the step's length (1, sqrt 2 or sqrt 3)."""
    local = voxels - voxels.min(axis=0) + 1  # a one-voxel margin keeps every neighbour index inside `dims`
    dims = tuple(np.ptp(voxels, axis=0) + 3)
    keys = np.ravel_multi_index(tuple(local.T), dims)
    order = np.argsort(keys)
    rows, cols, weights = [], [], []
    for offset in HALF_NEIGHBOURS:
        shifted = np.ravel_multi_index(tuple((local + offset).T), dims)
        pos = np.minimum(np.searchsorted(keys, shifted, sorter=order), len(keys) - 1)
        found = keys[order[pos]] == shifted
        rows.append(np.flatnonzero(found))
        cols.append(order[pos[found]])
        weights.append(np.full(found.sum(), np.linalg.norm(offset)))
    return coo_array((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
                     shape=(len(voxels), len(voxels))).tocsr()


