"""Rigid matching of canonical voxel sets to the other joint state: landing test, overlap score, hypotheses, ICP.

A motion T maps the canonical state c to the other state o. A canonical voxel moved by T *lands* when its centre
comes within `landing_tolerance` of o's points. It is *hidden* when it does not land but ends up inside o's shell
(`enclosed`): a door's inner face once the door is closed, a drawer's tray once pushed in. Hidden voxels neither
support nor contradict T; the others that do not land contradict it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from scipy.spatial import cKDTree

from utils.motion_estimation import correlation_shifts, plane_motion
from utils.neighbours import query
from utils.rigid_fit import apply_transform, icp, make_transform
from utils.voxel_grid import VoxelGrid, dilate, enclosed
from utils.voxel_keys import unique_rows

MIN_DYNAMIC_SUPPORT = 0.1  # least fraction of a part's landing voxels that must land on the other state's change


def voxel_means(points: np.ndarray, voxels: np.ndarray) -> np.ndarray:
    """(V, 3) mean of the `points` (N, 3) in each distinct voxel of `voxels` (N, 3): a light, denoised ICP target."""
    _, inverse, counts = unique_rows(voxels)
    return np.stack([np.bincount(inverse, weights=points[:, d]) for d in range(3)], axis=1) / counts[:, None]


class Fate(NamedTuple):
    """Where canonical voxels (M of them) go under a motion (`PartMatcher.fate`)."""

    moved: np.ndarray  # (M, 3) moved centres
    dist: np.ndarray  # (M,) distance to the other state's points (inf beyond the search reach)
    landed: np.ndarray  # (M,) bool
    hidden: np.ndarray  # (M,) bool: does not land but ends up inside the other state's shell


@dataclass
class StateVoxels:
    """One state's opaque points on the shared grid, its dynamic voxels and components, and lookups for matching."""

    grid: VoxelGrid
    points: np.ndarray  # (N, 3)
    occupancy: np.ndarray  # dense bool
    dynamic: np.ndarray  # dense bool
    components: list[np.ndarray]  # (M_k, 3) voxel indices of the dynamic components, largest first
    tree: cKDTree = field(init=False)  # over the mean point of each occupied voxel
    point_keys: np.ndarray = field(init=False)  # (N,) flat index of each point's voxel
    dynamic_voxels: np.ndarray = field(init=False)  # (D, 3)
    dynamic_near: np.ndarray = field(init=False)  # dense bool: dynamic voxels dilated by one
    labels: np.ndarray = field(init=False)  # dense int32: component of each voxel, -1 for none

    def __post_init__(self) -> None:
        voxels = self.grid.indices(self.points)
        self.tree = cKDTree(voxel_means(self.points, voxels))
        self.point_keys = self.grid.keys(voxels)
        self.dynamic_voxels = np.argwhere(self.dynamic)
        self.dynamic_near = dilate(self.dynamic, 1)
        self.labels = np.full(self.grid.shape, -1, dtype=np.int32)
        for k, comp in enumerate(self.components):
            self.labels[tuple(comp.T)] = k

    def points_in(self, voxels: np.ndarray) -> np.ndarray:
        """(P, 3) points that fall in the voxels (M, 3)."""
        return self.points[np.isin(self.point_keys, self.grid.keys(voxels))]


@dataclass
class Match:
    """A canonical voxel set's best rigid counterpart in the other state."""

    transform: np.ndarray  # (4, 4) c -> o
    overlap: float
    displacement: float  # mean distance moved by the voxel centres
    matched_voxels: np.ndarray  # (M', 3) dynamic voxels of the other state covered after the move
    target: int  # the other state's component holding most of them (-1: none)


class PartMatcher:
    """Finds and scores rigid motions of canonical voxel sets onto the other state's components."""

    def __init__(self, canonical: StateVoxels, other: StateVoxels, *, icp_points: int = 1000,
                 landing_tolerance: float = 1.5, seed: int = 0) -> None:
        self.c, self.o = canonical, other
        self.grid = canonical.grid
        self.tolerance = landing_tolerance * self.grid.voxel_size
        self.icp_points = icp_points
        self.hidden_cells = enclosed(other.occupancy)
        self.rng = np.random.default_rng(seed)

    def landing(self, T: np.ndarray, voxels: np.ndarray, reach: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
        """Per voxel of `voxels` (M, 3) moved by T: distance (M,) to the other state's points (inf beyond `reach`
        voxels; a shorter reach makes the search faster) and whether it lands (M,) bool."""
        dist = self._distances(self.moved(T, voxels), reach)
        return dist, dist <= self.tolerance

    def fate(self, T: np.ndarray, voxels: np.ndarray, reach: float = 5.0) -> Fate:
        """Where the voxels (M, 3) go under T: their moved centres, `landing`'s distances and landings, and which of
        those that do not land are hidden; the voxels are moved once."""
        moved = self.moved(T, voxels)
        dist = self._distances(moved, reach)
        landed = dist <= self.tolerance
        return Fate(moved, dist, landed, ~landed & self.grid.lookup(self.hidden_cells, self.grid.indices(moved)))

    def _distances(self, moved: np.ndarray, reach: float) -> np.ndarray:
        """(M,) distance of the centres `moved` (M, 3) to the other state's points (inf beyond `reach` voxels)."""
        return query(self.o.tree, moved, distance_upper_bound=reach * self.grid.voxel_size)[0]

    def clear(self, dist: np.ndarray, margin: float = 1.0) -> np.ndarray:
        """(M,) bool: voxels whose best of the landing distances `dist` (K, M) (`landing` under K motions) lands and
        beats every other by `margin` voxels (with one motion: lands)."""
        ranked = np.sort(np.minimum(dist, 1e9), axis=0)
        lands = ranked[0] <= self.tolerance
        return lands if len(dist) == 1 else lands & (ranked[1] - ranked[0] >= margin * self.grid.voxel_size)

    def moved(self, T: np.ndarray, voxels: np.ndarray) -> np.ndarray:
        """(M, 3) centres of the canonical `voxels` (M, 3) moved by T."""
        return apply_transform(T, self.grid.centres(voxels))

    def covered(self, moved: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The other state's dynamic voxels near the moved centres `moved` (M, 3): those inside their bounding box
        (grown by two voxels) (D, 3), and which of them (D,) lie within `landing_tolerance` of a moved centre."""
        margin = 2 * self.grid.voxel_size
        centres = self.grid.centres(self.o.dynamic_voxels)
        inside = np.all((centres >= moved.min(axis=0) - margin) & (centres <= moved.max(axis=0) + margin), axis=1)
        local = self.o.dynamic_voxels[inside]
        if len(local) == 0:
            return local, np.zeros(0, dtype=bool)
        reach = query(cKDTree(moved), self.grid.centres(local), distance_upper_bound=self.tolerance)[0]
        return local, np.isfinite(reach)

    def overlap(self, T: np.ndarray, voxels: np.ndarray) -> float:
        """Overlap ratio in [0, 1] of the canonical `voxels` (M, 3) moved by T with the other state.

        Harmonic mean of (a) the fraction of moved voxels that land, among those not hidden, and (b) the fraction of
        the other state's dynamic voxels around the moved set (its bounding box) that it covers. Zero when fewer than
        `MIN_DYNAMIC_SUPPORT` of the landing voxels land on dynamic voxels: a part must explain a change, not the
        static body. (b) is local so that parts that touch in the other state (one component there) still match.
        """
        moved, _, landed, hidden = self.fate(T, voxels)
        if not landed.any():
            return 0.0
        landed_fraction = landed.sum() / max(1, (~hidden).sum())
        support = self.grid.lookup(self.o.dynamic_near, self.grid.indices(moved[landed])).mean()
        local, covered = self.covered(moved)
        if support < MIN_DYNAMIC_SUPPORT or len(local) == 0:
            return 0.0
        coverage = covered.mean()
        return float(2 * landed_fraction * coverage / max(landed_fraction + coverage, 1e-12))

    def occluded(self, voxels: np.ndarray) -> np.ndarray:
        """(M,) bool: which canonical `voxels` (M, 3) lie inside the other state's shell where they are, i.e. are
        explained without any motion as surfaces the other state hides (a cabinet's inside behind its closed door)."""
        return self.grid.lookup(self.hidden_cells, voxels)

    def sample(self, points: np.ndarray) -> np.ndarray:
        """At most `icp_points` of `points` (N, 3), drawn reproducibly."""
        if len(points) <= self.icp_points:
            return points
        return points[self.rng.choice(len(points), self.icp_points, replace=False)]

    def plane_estimate(self, voxels: np.ndarray, target: np.ndarray) -> np.ndarray:
        """The paper's plane motion (4, 4) of `voxels` onto `target`, theta vs theta - pi chosen by overlap."""
        return plane_motion(self.grid.centres(voxels), self.grid.centres(target), lambda T: self.overlap(T, voxels))

    def context(self, target: np.ndarray, margin: int = 10) -> np.ndarray:
        """(K, 3) occupied voxels of the other state within `margin` voxels of the bounding box of `target` (M, 3)."""
        lo = np.maximum(target.min(axis=0) - margin, 0)
        hi = np.minimum(target.max(axis=0) + margin + 1, self.grid.shape)
        window = self.o.occupancy[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        return np.argwhere(window) + lo

    def hypotheses(self, voxels: np.ndarray, target: np.ndarray) -> list[np.ndarray]:
        """Initial motions of `voxels` onto `target`: the paper's plane estimate and the best voxel shifts."""
        shifts = correlation_shifts(voxels, target, self.context(target))
        return [self.plane_estimate(voxels, target), *(make_transform(t=s * self.grid.voxel_size) for s in shifts)]

    def refine(self, T: np.ndarray, points: np.ndarray, translation_only: bool = False,
               direction: np.ndarray | None = None) -> np.ndarray:
        """ICP refinement of the motion T of `points` (N, 3) against the other state's points: coarse (pairs within
        8 voxels), then fine (within 3 voxels, the farthest 30 % beyond the landing tolerance trimmed); a translation
        (along the unit `direction` (3,) when given) with `translation_only`."""
        vs = self.grid.voxel_size
        T = icp(points, self.o.tree, T, max_distance=8 * vs, translation_only=translation_only, direction=direction)
        return icp(points, self.o.tree, T, max_distance=3 * vs, keep_fraction=0.7, min_distance=self.tolerance,
                   translation_only=translation_only, direction=direction)

    def describe(self, T: np.ndarray, voxels: np.ndarray) -> Match:
        """Match record of the canonical `voxels` (M, 3) moved by T."""
        centres = self.grid.centres(voxels)
        moved = apply_transform(T, centres)
        local, covered = self.covered(moved)
        matched = local[covered]
        labels = self.o.labels[tuple(matched.T)]
        labels = labels[labels >= 0]
        target = int(np.bincount(labels).argmax()) if len(labels) else -1
        displacement = float(np.linalg.norm(moved - centres, axis=1).mean())
        return Match(T, self.overlap(T, voxels), displacement, matched, target)

    def match(self, voxels: np.ndarray, refinements: int = 5) -> Match | None:
        """Best rigid counterpart of the canonical `voxels` (M, 3) in the other state.

        Every component of the other state of plausible size (1/50 to 5 times) gives the plane and shift
        hypotheses; the `refinements` best by overlap, and the best plane hypothesis (whose raw overlap says little:
        its axis is only roughly placed), are refined by ICP and the best result wins (`pick_match`). None when no
        component is comparable.
        """
        planes, shifts = [], []
        for target in self.o.components:
            if 0.02 <= len(voxels) / len(target) <= 5.0:
                plane, *shift = self.hypotheses(voxels, target)
                planes.append((self.overlap(plane, voxels), plane))
                shifts += [(self.overlap(T, voxels), T) for T in shift]
        if not planes:
            return None
        ranked = sorted(planes + shifts, key=lambda c: -c[0])[:refinements]
        best_plane = max(planes, key=lambda c: c[0])
        chosen = [T for _, T in ranked] + ([] if any(best_plane[1] is T for _, T in ranked) else [best_plane[1]])
        points = self.sample(self.c.points_in(voxels))
        refined = [self.describe(self.refine(T, points), voxels) for T in chosen]
        return pick_match(refined, 10 * self.grid.voxel_size)

    def fit_translation(self, voxels: np.ndarray, points: np.ndarray, rigid: np.ndarray, target: np.ndarray,
                        direction: np.ndarray | None = None) -> np.ndarray:
        """Best pure translation (4, 4) of the canonical `voxels` (M, 3), holding `points` (N, 3), onto the other
        state: translation-only ICP from the mean displacement of the `rigid` fit and from the voxel shifts onto
        `target` (M', 3), also along the unit `direction` (3,) alone when given, keeping the best overlap. A drawer's
        panel is a plane that slides in itself; the shifts, which see its edges and the body around it, pin it, and
        a drawer cut out of a stack may slide the way the stack does."""
        offsets = [(apply_transform(rigid, points) - points).mean(axis=0)]
        if len(target):
            offsets += [s * self.grid.voxel_size for s in correlation_shifts(voxels, target, self.context(target))]
        fits = [self.refine(make_transform(t=t), points, translation_only=True) for t in offsets]
        if direction is not None:
            fits += [self.refine(make_transform(t=direction * (t @ direction)), points, translation_only=True,
                                 direction=direction) for t in offsets]
        return max(fits, key=lambda T: self.overlap(T, voxels))

    def truncated_residual(self, T: np.ndarray, points: np.ndarray) -> float:
        """Mean distance (capped at 3 voxels) from `points` (N, 3) moved by T to the other state's points."""
        cap = 3 * self.grid.voxel_size
        return float(np.minimum(query(self.o.tree, apply_transform(T, points))[0], cap).mean())


def pick_match(matches: list[Match], cluster: float, tie: float = 0.05) -> Match:
    """Among the matches within `tie` of the best overlap, those that move the part least (within `cluster` of the
    smallest mean displacement), and among these the best-overlapping one. Identical drawers overlap equally well
    with each other's slots: a part moves as little as the data allow."""
    best = max(m.overlap for m in matches)
    near = [m for m in matches if m.overlap >= best - tie]
    least = min(m.displacement for m in near)
    return max((m for m in near if m.displacement <= least + cluster), key=lambda m: m.overlap)
