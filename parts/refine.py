"""Splitting a part's region between motions that landing tests cannot tell apart.

The selection (`parts.selection`) counts a client as landed or not, so two motions closer than the landing tolerance
look alike to it: two drawers pulled out by 23 and 24 cm are served by one motion in between. Their residuals are
not alike: one motion leaves about half the difference on every sample, each drawer's own motion only the noise.

`split_region` tests that on the region's canonical samples that its motion lands, with the continuous cost
min(1, (d / tol)^2) of their landing distances d (a hidden sample that another motion happens to land says
nothing). The region's motion is first refitted on it. Candidate pairs of motions come from k-means chunks of the region
(each refitted by ICP, rigid and as a translation); every landed sample takes the cheaper motion of a pair, and every
sample of the region the majority choice of its nearest landed samples. The costs are compared above the region's noise floor: the mean cost of each
chunk under its own motion, which no motion of a part can beat (surface noise, sampling). A split is kept when it
removes at least half of the single motion's excess over that floor, saves more than the opening cost, and leaves
each side at least the opening cost of samples, mostly in one connected piece; both sides are then tested again.
An effect size, not only a significance: a door that a coarse model bent slightly, which chunks fit a little
better everywhere, stays in one piece.
"""
from __future__ import annotations

import numpy as np
from scipy.cluster.vq import kmeans2
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from parts.motion import Side, fit_coarse_to_fine
from utils.neighbours import query
from utils.rigid_fit import apply_transform

SPLIT_CHUNKS = (2, 3, 4, 6)
MAX_DEPTH = 3
MAX_FIT_POINTS = 800


def connected_pieces(points: np.ndarray, reach: float) -> list[np.ndarray]:
    """Index arrays of the connected pieces of `points` (N, 3), points closer than `reach` being connected, largest
    first: a part's samples form one piece at a reach of about 1.5 voxels (its faces meet at its edges)."""
    if len(points) == 0:
        return []
    pairs = cKDTree(points).query_pairs(reach, output_type="ndarray")
    graph = coo_array((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(points), len(points)))
    _, label = connected_components(graph, directed=False)
    order = np.argsort(label, kind="stable")
    pieces = np.split(order, np.cumsum(np.bincount(label))[:-1])
    return sorted(pieces, key=len, reverse=True)


def landing_costs(T: np.ndarray, points: np.ndarray, tree: cKDTree, tolerance: float) -> np.ndarray:
    """(N,) min(1, (d / tolerance)^2) of the distances d from `points` (N, 3) moved by T to the points of `tree`."""
    d = query(tree, apply_transform(T, points), distance_upper_bound=tolerance)[0]
    return np.where(np.isfinite(d), (d / tolerance) ** 2, 1.0)


def noise_floor(costs: np.ndarray, chunks: list[np.ndarray]) -> float:
    """Mean cost, over the samples of the finest chunking, of each chunk under the best motion fitted to it: what no
    rigid motion of a part does better than (surface noise, sampling). `costs` (H, N) holds each motion's costs,
    `chunks[h]` the samples of the chunk motion h was fitted to; the finest chunking is that of the last motions."""
    total = len(np.unique(np.concatenate(chunks))) if chunks else 0
    best: dict[bytes, tuple[int, float]] = {}
    covered = 0
    for cost, chunk in zip(costs[::-1], chunks[::-1]):
        key = chunk.tobytes()
        if key not in best:
            if covered >= total:
                break
            covered += len(chunk)
        mean = float(cost[chunk].mean()) if len(chunk) else 0.0
        if key not in best or mean < best[key][1]:
            best[key] = (len(chunk), mean)
    count = sum(n for n, _ in best.values())
    return sum(n * mean for n, mean in best.values()) / count if count else 0.0


class RegionSplitter:
    """Splits canonical regions by their motions onto the other state's samples (see the module docstring)."""

    def __init__(self, other: Side, tolerance: float, open_cost: float, reach: float, seed: int = 0) -> None:
        self.other, self.tolerance, self.open_cost, self.reach = other, tolerance, open_cost, reach
        self.rng = np.random.default_rng(seed)
        self.seed = seed

    def _fit(self, T: np.ndarray, points: np.ndarray, model: str) -> np.ndarray:
        if len(points) > MAX_FIT_POINTS:
            points = points[self.rng.choice(len(points), MAX_FIT_POINTS, replace=False)]
        return fit_coarse_to_fine(T, model, Side(points, self.other.tree), None, self.tolerance)

    def candidates(self, points: np.ndarray, T: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Motions of the k-means chunks of `points` (N, 3), refitted from T, rigid and as translations, and each
        motion's chunk (indices)."""
        found, chunks = [], []
        for k in SPLIT_CHUNKS:
            if len(points) < 2 * k * self.open_cost:
                break
            _, label = kmeans2(points, k, seed=self.seed, minit="++")
            for i in range(k):
                chunk = np.flatnonzero(label == i)
                if len(chunk) >= self.open_cost:
                    found += [self._fit(T, points[chunk], "rigid"), self._fit(T, points[chunk], "prismatic")]
                    chunks += [chunk, chunk]
        return found, chunks

    def split_region(self, points: np.ndarray, T: np.ndarray, depth: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
        """The region `points` (N, 3) with motion T as [(index array, motion)], split while splitting pays."""
        T = self._fit(T, points, "rigid") if depth == 0 else T
        whole = [(np.arange(len(points)), T)]
        if depth >= MAX_DEPTH or len(points) < 2 * self.open_cost:
            return whole
        single = landing_costs(T, points, self.other.tree, self.tolerance)
        landed = single < 1
        if landed.sum() < 2 * self.open_cost:
            return whole
        motions, chunks = self.candidates(points, T)
        if len(motions) < 2:
            return whole
        costs = np.stack([landing_costs(M, points[landed], self.other.tree, self.tolerance) for M in motions])
        position = np.cumsum(landed) - 1  # index among the landed samples
        floor = landed.sum() * noise_floor(costs, [position[c[landed[c]]] for c in chunks])
        total = float(single[landed].sum())
        best, pair = total, None
        for a in range(len(motions)):
            pair_costs = np.minimum(costs[a][None], costs[a + 1:]).sum(axis=1)
            if len(pair_costs) and pair_costs.min() < best:
                best, pair = float(pair_costs.min()), (a, a + 1 + int(np.argmin(pair_costs)))
        if pair is None or best - floor > 0.5 * (total - floor) or total - best <= self.open_cost:
            return whole
        side = self._smoothed(points, costs[pair[1]] < costs[pair[0]], landed)
        groups = [np.flatnonzero(~side), np.flatnonzero(side)]
        if min(len(g) for g in groups) < self.open_cost or not all(self._coherent(points[g]) for g in groups):
            return whole
        result = []
        for g, k in zip(groups, pair):
            refit = self._fit(motions[k], points[g], "rigid")
            result += [(g[i], M) for i, M in self.split_region(points[g], refit, depth + 1)]
        return result

    def _smoothed(self, points: np.ndarray, side: np.ndarray, known: np.ndarray, neighbours: int = 12) -> np.ndarray:
        """(N,) for every sample (N, 3), the majority of `side` (K,) bool, given for the `known` (N,) samples, among
        its `neighbours` nearest known samples."""
        _, nearest = query(cKDTree(points[known]), points, k=min(neighbours, int(known.sum())))
        return side[nearest.reshape(len(points), -1)].mean(axis=1) > 0.5

    def _coherent(self, points: np.ndarray) -> bool:
        """Whether most (80 %) of `points` (N, 3) form one piece at the part reach: a part is connected."""
        return len(connected_pieces(points, self.reach)[0]) >= 0.8 * len(points)
