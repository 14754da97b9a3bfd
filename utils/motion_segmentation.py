"""Splitting one dynamic voxel component into rigid parts by their motions.

Parts that touch in the canonical state (a door swung under a pulled-out drawer, drawers pulled out by different
amounts) form one 26-connected component. `segment_by_motion` explains a component with as few rigid motions as it
can. It matches the whole component first (at half the overlap bar: touching parts match poorly as one, and every
final part is checked against the full bar); then every connected piece that no motion found so far lands on the
other state is matched on its own, and its motion is added when it is convincing, lands most of the piece (a
drawer's tray, hidden once pushed in, lands nowhere and stays with its drawer) and covers changes of the other
state that the earlier motions do not already cover (a door's inner face could be flipped onto the closed door's
front, which its door already explains). After each new motion the component's voxels are shared out among the
motions (`assign_to_motions`) and the motions refitted on their shares. Motions that differ by less than the
landing tolerance (about 1.5 voxels) cannot be told apart here; stage 3 therefore first cuts a component where its
points separate at half the voxel size (`fine_pieces`), segments each piece, and joins pieces that move alike
(`merge_alike`). In full-surface data a part moved by a
wrong motion may land on inner surfaces by chance (a door pushed into the body by its neighbouring drawer's motion)
and then goes undetected: the main failure on the synthetic storage units.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from utils.part_matching import Match, PartMatcher, pick_match
from utils.rigid_fit import apply_transform, make_transform, rotation_angle
from utils.voxel_grid import VoxelGrid, connected_components, nearest_seed, spatial_chunks

MIN_LANDED = 0.5  # an added motion must land at least this fraction of its piece
MIN_NOVELTY = 0.5  # and this fraction of the changes it covers must be new
FINE_MIN_SHARE = 0.1  # in `fine_pieces`, a piece needs this fraction of the fine voxels to stand alone
SPLIT_CHUNKS = 12  # spatial clusters whose own motions `split_by_local_motions` tries
SLIDING_DEGREES = 3.0  # a part turning less than this slides: translating sub-parts, no revolute axis to place
Failure = tuple[np.ndarray, Match | None, str]  # a piece, its best match (or None) and why it is no part


def assign_to_motions(matcher: PartMatcher, voxels: np.ndarray, transforms: list[np.ndarray],
                      margin: float = 1.0) -> np.ndarray:
    """(M,) index of the motion in `transforms` that each of `voxels` (M, 3) follows.

    A voxel follows the motion that lands it when that beats every other motion by `margin` voxels; the others
    (hidden, ambiguous or unexplained voxels) follow the geodesically nearest voxel so assigned (`nearest_seed`),
    or their closest landing where none is reachable.
    """
    dist = np.stack([matcher.landing(T, voxels)[0] for T in transforms])
    best = np.argmin(dist, axis=0)
    if len(transforms) == 1:
        return best
    nearest = nearest_seed(voxels, matcher.clear(dist, margin))
    return np.where(nearest >= 0, best[np.maximum(nearest, 0)], best)


def _unlanded_pieces(matcher: PartMatcher, voxels: np.ndarray, transforms: list[np.ndarray],
                     min_piece: int) -> list[np.ndarray]:
    """Connected pieces (>= `min_piece` voxels) of the voxels (M, 3) that no motion of `transforms` lands."""
    landed = np.any([matcher.landing(T, voxels)[1] for T in transforms], axis=0)
    loose = voxels[~landed]
    return connected_components(matcher.grid.mask(loose), min_piece) if len(loose) else []


def _regions(matcher: PartMatcher, voxels: np.ndarray, min_piece: int) -> list[np.ndarray]:
    """The connected regions of the voxels (M, 3) that follow one motion and make parts: those of at least
    `min_piece` voxels and half the largest one's size (identical drawers pulled out alike); smaller scraps left by
    the sharing-out are dropped."""
    regions = connected_components(matcher.grid.mask(voxels), min_piece)
    return [r for r in regions if len(r) >= 0.5 * len(regions[0])]


class _Segmentation:
    """The motions found in one component, their shares of its voxels and the changes they cover."""

    def __init__(self, matcher: PartMatcher, voxels: np.ndarray) -> None:
        self.matcher, self.voxels = matcher, voxels
        self.transforms: list[np.ndarray] = []
        self.labels = np.zeros(len(voxels), dtype=np.int64)
        self.claimed = np.zeros(0, dtype=np.int64)  # flat keys of the other state's voxels covered so far

    def novel(self, match: Match) -> bool:
        """Whether most of the changes covered by `match` are not covered by the motions found so far."""
        if len(match.matched_voxels) == 0:
            return False
        return 1.0 - np.isin(self.matcher.grid.keys(match.matched_voxels), self.claimed).mean() >= MIN_NOVELTY

    def add(self, transform: np.ndarray) -> None:
        """Add a motion, share the voxels out, refit every motion on its share, share out again."""
        m = self.matcher
        self.transforms.append(transform)
        for _ in range(2):
            self.labels = assign_to_motions(m, self.voxels, self.transforms)
            self.transforms = [m.refine(T, m.sample(m.c.points_in(self.share(i)))) if len(self.share(i)) >= 3 else T
                               for i, T in enumerate(self.transforms)]
        claimed = [np.zeros(0, dtype=np.int64)]
        for i, T in enumerate(self.transforms):
            local, hit = m.covered(m.moved(T, self.share(i)))
            claimed.append(m.grid.keys(local[hit]))
        self.claimed = np.unique(np.concatenate(claimed))

    def share(self, i: int) -> np.ndarray:
        return self.voxels[self.labels == i]


def _reason(match: Match | None, min_overlap: float) -> str:
    """Why a piece with best match `match` is no part."""
    if match is None or match.overlap < min_overlap:
        return f"no rigid counterpart (best overlap {0.0 if match is None else match.overlap:.2f} < {min_overlap})"
    return "its motion lands too little of it or covers only changes that other motions explain"


def segment_by_motion(matcher: PartMatcher, voxels: np.ndarray, min_overlap: float, min_piece: int,
                      max_motions: int = 6) -> tuple[list[tuple[np.ndarray, Match]], list[Failure]]:
    """Rigid parts of the canonical component `voxels` (M, 3) (see the module docstring).

    Returns the parts as (voxels (M_i, 3), match) with overlap >= `min_overlap`, largest first, each a connected
    region of >= `min_piece` voxels following one motion, and the pieces that are no part, with their best match
    (or None) and the reason.
    """
    seg = _Segmentation(matcher, voxels)
    failed: list[Failure] = []
    tried = np.zeros(0, dtype=np.int64)  # voxels of pieces that found no motion
    pending = [voxels]
    while pending and len(seg.transforms) < max_motions:
        piece = pending.pop(0)
        match = matcher.match(piece)
        if not seg.transforms:  # parts that touch make a poor joint match: half the bar, the parts are checked below
            convincing = match is not None and match.overlap >= 0.5 * min_overlap
        else:
            convincing = (match is not None and match.overlap >= min_overlap and seg.novel(match)
                          and matcher.landing(match.transform, piece)[1].mean() >= MIN_LANDED)
        if not convincing:
            failed.append((piece, match, _reason(match, min_overlap)))
            tried = np.union1d(tried, matcher.grid.keys(piece))
            continue
        seg.add(match.transform)
        pending = [p for p in _unlanded_pieces(matcher, voxels, seg.transforms, min_piece)
                   if np.isin(matcher.grid.keys(p), tried).mean() < 0.5]
    parts = []
    for i, T in enumerate(seg.transforms):
        for region in _regions(matcher, seg.share(i), min_piece):
            points = matcher.sample(matcher.c.points_in(region))
            inherited = matcher.describe(matcher.refine(T, points), region)
            match = inherited if len(region) == len(voxels) else pick_match(
                [inherited, matcher.match(region)], 10 * matcher.grid.voxel_size)
            if match.overlap >= min_overlap:
                parts.append((region, match))
            else:
                failed.append((region, match, _reason(match, min_overlap)))
    parts.sort(key=lambda part: -len(part[0]))
    return parts, failed


def fine_pieces(matcher: PartMatcher, voxels: np.ndarray) -> list[np.ndarray]:
    """The canonical `voxels` (M, 3) cut where their points separate at half the voxel size (parts that touch on the
    grid: stacked drawers 1 cm apart on a 1 cm grid), as voxel sets, largest first.

    The points' connected pieces at half the voxel size with at least `FINE_MIN_SHARE` of the fine voxels seed the
    sets; each voxel joins the piece holding most of its points, or (none) the geodesically nearest voxel so
    assigned. One set, `voxels` itself, when the points do not separate.
    """
    points = matcher.c.points_in(voxels)
    fine = VoxelGrid.around([points], matcher.grid.voxel_size / 2)
    pieces = connected_components(fine.occupancy(points))
    total = sum(len(piece) for piece in pieces)
    pieces = [piece for piece in pieces if len(piece) >= FINE_MIN_SHARE * total]
    if len(pieces) < 2:
        return [voxels]
    labels = np.full(fine.shape, -1, dtype=np.int64)
    for i, piece in enumerate(pieces):
        labels[tuple(piece.T)] = i
    point_piece = labels[tuple(fine.indices(points).T)]
    owner = _majority(matcher.grid.keys(voxels), matcher.grid.keys(matcher.grid.indices(points)), point_piece)
    nearest = nearest_seed(voxels, owner >= 0)
    owner = np.where(owner >= 0, owner, np.where(nearest >= 0, owner[np.maximum(nearest, 0)], 0))
    sets = [voxels[owner == i] for i in range(len(pieces))]
    return sorted((s for s in sets if len(s)), key=len, reverse=True)


Refit = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (motion (4, 4), canonical voxels (M, 3)) -> refitted motion


def merge_alike(matcher: PartMatcher, parts: list[tuple[np.ndarray, Match]], min_shift: float,
                refit: Refit | None = None) -> list[tuple[np.ndarray, Match]]:
    """Join parts (voxels (M_i, 3), match) whose motions move a part's points within `min_shift` (mean distance) of
    where a larger part's motion moves them: pieces of one rigid part that `fine_pieces` cut apart. The joined part's
    motion is refitted on all its points (by `refit`, rigid ICP by default). Largest first."""
    refit = refit or (lambda T, voxels: matcher.refine(T, matcher.sample(matcher.c.points_in(voxels))))
    parts = sorted(parts, key=lambda part: -len(part[0]))
    samples = [matcher.sample(matcher.c.points_in(voxels)) for voxels, _ in parts]
    merged = []
    for group in _alike_groups([match.transform for _, match in parts], samples, min_shift):
        voxels, match = np.concatenate([parts[i][0] for i in group]), parts[group[0]][1]
        merged.append((voxels, match if len(group) == 1 else matcher.describe(refit(match.transform, voxels), voxels)))
    return merged


def _alike_groups(transforms: list[np.ndarray], samples: list[np.ndarray], min_shift: float) -> list[list[int]]:
    """Greedy groups (indices, leader first) of the motions `transforms` (4, 4): a motion joins the first group whose
    leader moves its points `samples[i]` (N_i, 3) within `min_shift` (mean distance) of where it moves them."""
    groups: list[list[int]] = []
    for i, (T, sample) in enumerate(zip(transforms, samples)):
        moved = apply_transform(T, sample)
        for group in groups:
            if np.linalg.norm(apply_transform(transforms[group[0]], sample) - moved, axis=1).mean() < min_shift:
                group.append(i)
                break
        else:
            groups.append([i])
    return groups


def split_by_local_motions(matcher: PartMatcher, voxels: np.ndarray, transform: np.ndarray, min_overlap: float,
                           min_piece: int, min_shift: float, chunks: int = SPLIT_CHUNKS,
                           seed: int = 0) -> list[tuple[np.ndarray, Match]]:
    """Sliding sub-parts of one accepted sliding part (voxels (M, 3), its motion `transform` (4, 4)) whose regions
    move apart by more than `min_shift`: parts that touch even at half the voxel size and move within the landing
    tolerance of one motion (stacked drawers pulled out by 29, 30 and 32 cm, their 1 cm gaps bridged by a coarse
    model's surface).

    The part is cut into `chunks` spatial clusters (k-means on the voxel centres), each refits the part's translation
    along its direction on its own points (`slide_fit`); chunks whose motions agree within `min_shift` are grouped and
    each group's motion refitted on all its points (`_distinct_motions`: several chunks lie on one drawer, and
    near-equal motions would leave no voxel clearly following any of them); the voxels are shared out among the
    distinct motions by chunk (`_vote`) and each motion refitted on its share, three times; every motion's connected
    regions of at least `min_piece` voxels with a convincing match (`min_overlap`) become sub-parts, and sub-parts that
    move alike within `min_shift` are joined again (`merge_alike`). Largest first; none when the part does not split.
    A part that turns is not split: each chunk of one door fits a hinge of its own.
    """
    direction = slide_direction(transform)
    if direction is None:
        return []
    cluster = spatial_chunks(matcher.grid, voxels, chunks, seed)
    fit = slide_fit(matcher, direction)
    pieces = [voxels[cluster == i] for i in range(chunks) if np.sum(cluster == i) >= min_piece]
    transforms = [fit(transform, chunk) for chunk in pieces]
    for _ in range(3):
        transforms = _distinct_motions(matcher, voxels, pieces, transforms, min_shift, fit)
        if len(transforms) < 2:
            return []
        owner = _vote(matcher, voxels, cluster, transforms)
        kept = [i for i in range(len(transforms)) if np.sum(owner == i) >= min_piece]
        if len(kept) < 2:
            return []
        pieces = [voxels[owner == i] for i in kept]
        transforms = [fit(transforms[i], piece) for i, piece in zip(kept, pieces)]
    owner = _vote(matcher, voxels, cluster, transforms)
    parts = []
    for i, T in enumerate(transforms):
        for region in _regions(matcher, voxels[owner == i], min_piece):
            found = matcher.describe(fit(T, region), region)
            if found.overlap >= min_overlap:
                parts.append((region, found))
    return sorted(merge_alike(matcher, parts, min_shift, fit), key=lambda part: -len(part[0]))


def slide_direction(transform: np.ndarray) -> np.ndarray | None:
    """Unit direction (3,) of the translation of a part with motion `transform` (4, 4) that slides (turns less than
    `SLIDING_DEGREES`); None for a part that turns (or stays)."""
    shift = transform[:3, 3]
    if rotation_angle(transform) >= np.radians(SLIDING_DEGREES) or np.linalg.norm(shift) == 0:
        return None
    return shift / np.linalg.norm(shift)


def slide_fit(matcher: PartMatcher, direction: np.ndarray) -> Refit:
    """How the sub-parts of a part sliding along the unit `direction` (3,) refit their motions: by a translation
    along it (ICP from the motion's translation projected on it): the drawers of a stack slide the same way by
    different amounts, and a free translation lets a drawer's flat front and sides slide along themselves onto the
    cabinet's walls."""
    return lambda T, voxels: matcher.refine(make_transform(t=direction * (T[:3, 3] @ direction)),
                                            matcher.sample(matcher.c.points_in(voxels)), translation_only=True,
                                            direction=direction)


def _vote(matcher: PartMatcher, voxels: np.ndarray, cluster: np.ndarray, transforms: list[np.ndarray]) -> np.ndarray:
    """(M,) index of the motion in `transforms` that each of `voxels` (M, 3) follows: the motion that lands its
    chunk (`cluster` (M,)) best on average, unless the voxel itself lands a voxel closer under another
    (`assign_to_motions`' clear voxels). Landing distances are capped at 5 voxels."""
    cap = 5 * matcher.grid.voxel_size
    dist = np.minimum(np.stack([matcher.landing(T, voxels)[0] for T in transforms]), cap)  # (K, M)
    sums = np.stack([np.bincount(cluster, weights=d, minlength=cluster.max() + 1) for d in dist])  # (K, chunks)
    owner = np.argmin(sums, axis=0)[cluster]
    return np.where(matcher.clear(dist), np.argmin(dist, axis=0), owner)


def _distinct_motions(matcher: PartMatcher, voxels: np.ndarray, pieces: list[np.ndarray], transforms: list[np.ndarray],
                      min_shift: float, fit: Refit) -> list[np.ndarray]:
    """The motions (4, 4) of the voxel sets `pieces` (M_i, 3) of a part `voxels` (M, 3), one per piece in
    `transforms`, grouped greedily in order by where they move the part's points (`_alike_groups`); each group's
    motion is refitted (`fit`) on its pieces."""
    sample = matcher.sample(matcher.c.points_in(voxels))
    groups = _alike_groups(transforms, [sample] * len(transforms), min_shift)
    return [fit(transforms[group[0]], np.concatenate([pieces[i] for i in group])) for group in groups]


def _majority(voxel_keys: np.ndarray, point_keys: np.ndarray, point_labels: np.ndarray) -> np.ndarray:
    """(M,) the most frequent label >= 0 among the points (flat voxel keys `point_keys`, labels `point_labels`) of
    each voxel of `voxel_keys` (M,); -1 where a voxel has no labelled point."""
    labelled = point_labels >= 0
    keys, labels = point_keys[labelled], point_labels[labelled]
    result = np.full(len(voxel_keys), -1, dtype=np.int64)
    if len(keys) == 0:
        return result
    pairs, counts = np.unique(np.stack([keys, labels], axis=1), axis=0, return_counts=True)
    order = np.lexsort((-counts, pairs[:, 0]))  # per voxel key, the most frequent label first
    pairs = pairs[order]
    first = np.concatenate([[True], pairs[1:, 0] != pairs[:-1, 0]])
    best_keys, best_labels = pairs[first, 0], pairs[first, 1]
    pos = np.searchsorted(best_keys, voxel_keys)
    found = (pos < len(best_keys)) & (best_keys[np.minimum(pos, len(best_keys) - 1)] == voxel_keys)
    result[found] = best_labels[pos[found]]
    return result
