"""Stage 3's global fit of K rigid motions to all canonical dynamic voxels at once, for touching parts.

`segment_by_motion` grows parts one motion at a time from a whole component's match; when four parts touch (the
storage unit's two doors and two drawers, open, form one component) that first match is poor and every later step
inherits it. Here the number of parts and their joint types are known (stage 3's `--joint_types`), so the parts are
found as one choice of K motions that best explains the scene (a facility-location problem):

- *Hypotheses*: the canonical voxels are cut into spatial chunks (k-means); each chunk's best rigid match
  (`PartMatcher.match`) is a revolute hypothesis; its best translation (`PartMatcher.fit_translation`) and its
  translations onto all the other state's changes (`correlation_shifts`) are prismatic ones.
- *Cost* of a choice of motions (`SceneCost.total`): every assignment chunk follows the motion that explains it best
  (chunks, not voxels, so that a motion cannot collect stray voxels it lands by chance all over the object); a voxel
  costs 0 when it lands exactly, rising to `LANDED_COST` at the landing tolerance, `HIDDEN_COST` when the other state
  hides it, 1 when it contradicts the motion; every dynamic voxel of the other state that no moved chunk covers
  costs 1 (a part must account for a change: this places a door rather than letting it vanish inside the body).
- *Choice* (`choose_motions`): greedy, one motion of an open joint type at a time, then single swaps within a type
  until none lowers the cost. The chosen motions are refitted by ICP on their shares (translation-only for
  prismatic ones) `REFITS` times; each translation then climbs the scene cost directly (`climb_translation`: ICP
  drifts on a drawer whose sides are hidden); last, a motion whose share holds two parts that move nearly alike may
  be cut in two (`split_motion`). Each motion's share is its chunks' voxels, smoothed voxel by voxel
  (`smooth_labels`).

`select_parts` (utils/part_selection.py) runs this for two or more parts of given types and keeps it when its scene
cost is below that of the parts found one motion at a time.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from utils.motion_estimation import correlation_shifts
from utils.neighbours import query
from utils.part_matching import Match, PartMatcher
from utils.rigid_fit import make_transform
from utils.voxel_grid import adjacency, connected_components, spatial_chunks

HYPOTHESIS_CHUNKS = 24  # spatial chunks whose own motions are the hypotheses
ASSIGNMENT_CHUNKS = 48  # spatial chunks that each follow one motion
LANDED_COST = 0.5  # cost of a voxel landing at the landing tolerance (0 when exactly on the other state)
HIDDEN_COST = 0.5  # cost of a voxel the other state hides after the motion
REFITS = 2  # rounds of ICP refits of the chosen motions on their shares
TIE = 1e-3  # relative scene cost within which `climb_translation` prefers the shorter translation
SMOOTHING = 0.1  # cost per neighbouring voxel that follows another motion


@dataclass
class MotionCost:
    """What one motion explains: the cost of each canonical voxel (M,) and of each assignment chunk (C,) following it,
    and which dynamic voxels of the other state each chunk's landing voxels cover (C, D) bool."""

    voxel_cost: np.ndarray
    chunk_cost: np.ndarray
    covers: np.ndarray


class SceneCost:
    """The cost of explaining the canonical `voxels` (M, 3), cut into `chunks` spatial chunks, by a choice of motions."""

    def __init__(self, matcher: PartMatcher, voxels: np.ndarray, chunks: int = ASSIGNMENT_CHUNKS,
                 seed: int = 0) -> None:
        self.matcher, self.voxels = matcher, voxels
        self.chunks = min(chunks, len(voxels))
        self.chunk = spatial_chunks(matcher.grid, voxels, self.chunks, seed)
        self.targets = matcher.grid.centres(matcher.o.dynamic_voxels)

    def motion(self, T: np.ndarray) -> MotionCost:
        """The per-chunk cost and coverage of the motion T (4, 4)."""
        m = self.matcher
        moved, dist, landed, hidden = m.fate(T, self.voxels, reach=m.tolerance / m.grid.voxel_size)  # only landings
        cost = np.where(landed, LANDED_COST * np.minimum(dist / m.tolerance, 1.0), np.where(hidden, HIDDEN_COST, 1.0))
        covers = np.zeros((self.chunks, len(self.targets)), dtype=bool)
        index = np.flatnonzero(landed)
        if len(index) and len(self.targets):
            dist, nearest = query(cKDTree(moved[index]), self.targets, k=4, distance_upper_bound=m.tolerance)
            hit = np.isfinite(dist)
            covers[self.chunk[index[nearest[hit]]], np.nonzero(hit)[0]] = True
        return MotionCost(cost, np.bincount(self.chunk, weights=cost, minlength=self.chunks), covers)

    def assignment(self, costs: list[MotionCost]) -> np.ndarray:
        """(C,) index into `costs` of the motion each chunk follows."""
        return np.argmin(np.stack([c.chunk_cost for c in costs]), axis=0)

    def total(self, costs: list[MotionCost]) -> float:
        """Cost of the motions `costs` explaining the scene: each chunk's cost under the motion it follows plus one per
        dynamic voxel of the other state that no chunk covers."""
        chunk_costs = np.stack([c.chunk_cost for c in costs])
        owner = np.argmin(chunk_costs, axis=0)
        covered = np.zeros(len(self.targets), dtype=bool)
        for i, cost in enumerate(costs):
            covered |= cost.covers[owner == i].any(axis=0)
        return float(chunk_costs.min(axis=0).sum() + (~covered).sum())

    def shares(self, costs: list[MotionCost]) -> list[np.ndarray]:
        """The canonical voxels (M_i, 3) following each motion: their chunks' motions, then each voxel's own cost
        smoothed over its neighbours (`smooth_labels`)."""
        owner = smooth_labels(self.voxels, np.stack([c.voxel_cost for c in costs]),
                              self.assignment(costs)[self.chunk])
        return [self.voxels[owner == i] for i in range(len(costs))]


def smooth_labels(voxels: np.ndarray, cost: np.ndarray, labels: np.ndarray,
                  weight: float = SMOOTHING, iterations: int = 20) -> np.ndarray:
    """(M,) labels of the `voxels` (M, 3) that lower each voxel's `cost` (K, M) of its label plus `weight` per
    26-neighbour of another label, by iterated conditional modes from `labels` (M,): a voxel takes the motion that
    explains it unless its neighbourhood disagrees, so that chance landings do not cut holes into parts."""
    edges = adjacency(voxels).astype(bool)
    neighbours = (edges + edges.T).astype(np.float64)  # (M, M) 1 per 26-neighbour within the set
    for _ in range(iterations):
        agree = (neighbours @ np.eye(len(cost))[labels]).T  # (K, M) neighbours of each label
        new = np.argmin(cost - weight * agree, axis=0)
        if np.array_equal(new, labels):
            break
        labels = new
    return labels


def motion_hypotheses(matcher: PartMatcher, voxels: np.ndarray, chunks: int = HYPOTHESIS_CHUNKS, min_chunk: int = 30,
                      seed: int = 0) -> list[tuple[np.ndarray, str]]:
    """(motion (4, 4), 'revolute' or 'prismatic') hypotheses of the canonical `voxels` (M, 3): each spatial chunk's
    best rigid match and best translation, and its translations onto the other state's changes (`correlation_shifts`
    onto all of them: a chunk of a drawer whose best match went elsewhere)."""
    label = spatial_chunks(matcher.grid, voxels, min(chunks, len(voxels)), seed)
    changes = matcher.o.dynamic_voxels
    context = matcher.context(changes)
    found = []
    for i in range(label.max() + 1):
        chunk = voxels[label == i]
        match = matcher.match(chunk) if len(chunk) >= min_chunk else None
        if match is None:
            continue
        points = matcher.sample(matcher.c.points_in(chunk))
        found += [(match.transform, "revolute"),
                  (matcher.fit_translation(chunk, points, match.transform, match.matched_voxels), "prismatic")]
        found += [(matcher.refine(make_transform(t=shift * matcher.grid.voxel_size), points, translation_only=True),
                   "prismatic") for shift in correlation_shifts(chunk, changes, context)]
    return found


def choose_motions(scene: SceneCost, costs: list[MotionCost], kinds: list[str], types: tuple[str, ...]) -> list[int]:
    """Indices of the hypotheses (`costs`, of `kinds`) that explain the scene best with one motion per joint type of
    `types`: greedy, then single swaps within a type while the cost drops."""
    quota = {kind: types.count(kind) for kind in sorted(set(types))}
    chosen: list[int] = []
    for _ in types:
        open_kinds = {kind for kind, n in quota.items() if sum(kinds[h] == kind for h in chosen) < n}
        options = [h for h in range(len(costs)) if h not in chosen and kinds[h] in open_kinds]
        if not options:
            break
        chosen.append(min(options, key=lambda h: scene.total([costs[i] for i in chosen + [h]])))
    best = scene.total([costs[i] for i in chosen])
    improved = True
    while improved:
        improved = False
        for slot in range(len(chosen)):
            for h in range(len(costs)):
                if h in chosen or kinds[h] != kinds[chosen[slot]]:
                    continue
                trial = chosen[:slot] + [h] + chosen[slot + 1:]
                score = scene.total([costs[i] for i in trial])
                if score < best - 1e-9:
                    chosen, best, improved = trial, score, True
    return chosen


def climb_translation(scene: SceneCost, costs: list[MotionCost], i: int, T: np.ndarray, step: float = 2.0,
                      min_step: float = 0.25) -> tuple[np.ndarray, MotionCost]:
    """The motion `i` of `costs` (T (4, 4)) with its translation moved along the grid axes, in steps of `step` voxels
    halved down to `min_step`, while that lowers the scene cost; then, the same way, while that shortens it within
    `TIE` of the cost reached; and its cost. ICP drifts on a drawer: its sides and tray, hidden once closed, pair with
    the body's inner walls (3 cm sideways on the synthetic storage unit's drawers from a start at the ground truth);
    the scene cost discounts hidden voxels and asks the drawer's front to fill its slot. A front flush with its
    neighbours' lands anywhere within their common face: there a drawer moves as little as the data allow."""
    cost = costs[i]
    best = scene.total(costs)
    vs = scene.matcher.grid.voxel_size
    for shorten in (False, True):
        bound, size = best * (1 + TIE), step
        while size >= min_step:
            for offset in np.vstack([np.eye(3), -np.eye(3)]) * size * vs:
                trial = make_transform(t=offset) @ T
                if shorten and np.linalg.norm(trial[:3, 3]) >= np.linalg.norm(T[:3, 3]):
                    continue
                trial_cost = scene.motion(trial)
                score = scene.total(costs[:i] + [trial_cost] + costs[i + 1:])
                if score <= bound if shorten else score < best - 1e-6:
                    T, cost = trial, trial_cost
                    costs = costs[:i] + [trial_cost] + costs[i + 1:]
                    if not shorten:
                        best = score
                    break
            else:
                size /= 2
    return T, cost


def split_motion(scene: SceneCost, transforms: list[np.ndarray], costs: list[MotionCost], kinds: list[str],
                 min_piece: int) -> bool:
    """In place: the best move that cuts one motion's share in two halves (k-means), fits the second half's own
    motion and lets it replace the least useful motion of the same kind (whose removal raises the scene cost least),
    when that lowers the scene cost. Two drawers pulled out by nearly the same amount (29 and 30 cm) land alike under
    one motion, and the motion left over finds a stray one elsewhere; fitting each half on its own separates them.
    Whether a move was made."""
    m = scene.matcher
    best, move = scene.total(costs), None
    shares = scene.shares(costs)
    for kind in sorted(set(kinds)):  # a fixed order: ties must not depend on string hashing
        same = [j for j in range(len(costs)) if kinds[j] == kind]
        if len(same) < 2:
            continue
        spare = min(same, key=lambda j: scene.total(costs[:j] + costs[j + 1:]))
        for i in same:
            if i == spare or len(shares[i]) < 2 * min_piece:
                continue
            halves = spatial_chunks(m.grid, shares[i], 2)
            for half in (shares[i][halves == 0], shares[i][halves == 1]):
                T = m.refine(transforms[i], m.sample(m.c.points_in(half)), translation_only=kind == "prismatic")
                trial = costs[:spare] + [scene.motion(T)] + costs[spare + 1:]
                if kind == "prismatic":
                    T, trial[spare] = climb_translation(scene, trial, spare, T)
                score = scene.total(trial)
                if score < best - 1e-6:
                    best, move = score, (spare, T, trial[spare])
    if move is None:
        return False
    j, transforms[j], costs[j] = move
    return True


def fit_motions(scene: SceneCost, types: tuple[str, ...], min_piece: int,
                seed: int = 0) -> tuple[list[tuple[np.ndarray, Match, str]], float]:
    """Parts of the scene's canonical voxels under the best choice of one motion per joint type of `types` (see the
    module docstring): (voxels (M_i, 3) of its connected regions of >= `min_piece` voxels, match, kind) per motion
    that keeps any, and the cost of the choice."""
    matcher = scene.matcher
    hypotheses = motion_hypotheses(matcher, scene.voxels, seed=seed)
    if len(hypotheses) < len(types):
        return [], np.inf
    costs = [scene.motion(T) for T, _ in hypotheses]
    kinds = [kind for _, kind in hypotheses]
    chosen = choose_motions(scene, costs, kinds, types)
    transforms, kinds = [hypotheses[h][0] for h in chosen], [kinds[h] for h in chosen]
    costs = [costs[h] for h in chosen]
    for _ in range(REFITS):
        transforms = [matcher.refine(T, matcher.sample(matcher.c.points_in(share)),
                                     translation_only=kind == "prismatic") if len(share) >= 3 else T
                      for T, kind, share in zip(transforms, kinds, scene.shares(costs))]
        costs = [scene.motion(T) for T in transforms]
    for i, kind in enumerate(kinds):
        if kind == "prismatic":
            transforms[i], costs[i] = climb_translation(scene, costs, i, transforms[i])
    for _ in kinds:
        if not split_motion(scene, transforms, costs, kinds, min_piece):
            break
    parts = []
    for T, kind, share in zip(transforms, kinds, scene.shares(costs)):
        regions = connected_components(matcher.grid.mask(share), min_piece) if len(share) else []
        if regions:
            region = np.concatenate(regions)
            parts.append((region, matcher.describe(T, region), kind))
    return parts, scene.total(costs)
