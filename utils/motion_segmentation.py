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

import numpy as np
from scipy.cluster.vq import kmeans2

from utils.part_matching import Match, PartMatcher, pick_match
from utils.rigid_fit import apply_transform, rotation_angle
from utils.voxel_grid import VoxelGrid, connected_components, nearest_seed

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
    ranked = np.sort(np.minimum(dist, 1e9), axis=0)
    clear = (ranked[0] <= matcher.tolerance) & (ranked[1] - ranked[0] >= margin * matcher.grid.voxel_size)
    nearest = nearest_seed(voxels, clear)
    return np.where(nearest >= 0, best[np.maximum(nearest, 0)], best)


def _keys(matcher: PartMatcher, voxels: np.ndarray) -> np.ndarray:
    return np.ravel_multi_index(tuple(voxels.T), matcher.grid.shape)


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
        return 1.0 - np.isin(_keys(self.matcher, match.matched_voxels), self.claimed).mean() >= MIN_NOVELTY

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
            claimed.append(_keys(m, local[hit]))
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
            tried = np.union1d(tried, _keys(matcher, piece))
            continue
        seg.add(match.transform)
        pending = [p for p in _unlanded_pieces(matcher, voxels, seg.transforms, min_piece)
                   if np.isin(_keys(matcher, p), tried).mean() < 0.5]
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
    owner = _majority(_keys(matcher, voxels), _keys(matcher, matcher.grid.indices(points)), point_piece)
    nearest = nearest_seed(voxels, owner >= 0)
    owner = np.where(owner >= 0, owner, np.where(nearest >= 0, owner[np.maximum(nearest, 0)], 0))
    sets = [voxels[owner == i] for i in range(len(pieces))]
    return sorted((s for s in sets if len(s)), key=len, reverse=True)


def merge_alike(matcher: PartMatcher, parts: list[tuple[np.ndarray, Match]],
                min_shift: float) -> list[tuple[np.ndarray, Match]]:
    """Join parts (voxels (M_i, 3), match) whose motions move a part's points within `min_shift` (mean distance) of
    where a larger part's motion moves them: pieces of one rigid part that `fine_pieces` cut apart. The joined part's
    motion is refitted on all its points. Largest first."""
    groups: list[tuple[np.ndarray, Match, bool]] = []  # voxels, match, grown
    for voxels, match in sorted(parts, key=lambda part: -len(part[0])):
        sample = matcher.sample(matcher.c.points_in(voxels))
        moved = apply_transform(match.transform, sample)
        for g, (members, leader, _) in enumerate(groups):
            if np.linalg.norm(apply_transform(leader.transform, sample) - moved, axis=1).mean() < min_shift:
                groups[g] = (np.concatenate([members, voxels]), leader, True)
                break
        else:
            groups.append((voxels, match, False))
    merged = []
    for voxels, match, grown in groups:
        if grown:
            match = matcher.describe(matcher.refine(match.transform, matcher.sample(matcher.c.points_in(voxels))),
                                     voxels)
        merged.append((voxels, match))
    return merged


def split_by_local_motions(matcher: PartMatcher, voxels: np.ndarray, transform: np.ndarray, min_overlap: float,
                           min_piece: int, min_shift: float, chunks: int = SPLIT_CHUNKS,
                           seed: int = 0) -> list[tuple[np.ndarray, Match]]:
    """Rigid sub-parts of one accepted part (voxels (M, 3), its motion `transform` (4, 4)) whose regions move apart by
    more than `min_shift`: parts that touch even at half the voxel size and move within the landing tolerance of one
    motion (stacked drawers pulled out by 29, 30 and 32 cm, their 1 cm gaps bridged by a coarse model's surface).

    The part is cut into `chunks` spatial clusters (k-means on the voxel centres); each refits the part's motion by
    ICP on its own points; the voxels are shared out among the part's and the chunks' motions (`assign_to_motions`:
    a voxel leaves the part's motion only when another lands it a voxel closer), every motion's connected regions of
    at least `min_piece` voxels with a convincing match (`min_overlap`) become sub-parts, and sub-parts that move
    alike within `min_shift` are joined again (`merge_alike`). Largest first; a single part means no split.
    """
    _, cluster = kmeans2(matcher.grid.centres(voxels), chunks, seed=seed, minit="++")
    sliding = rotation_angle(transform) < np.radians(SLIDING_DEGREES)
    transforms = [transform]
    for i in range(chunks):
        chunk = voxels[cluster == i]
        if len(chunk) >= min_piece:
            transforms.append(matcher.refine(transform, matcher.sample(matcher.c.points_in(chunk)), sliding))
    owner = assign_to_motions(matcher, voxels, transforms)
    parts = []
    for i, T in enumerate(transforms):
        for region in _regions(matcher, voxels[owner == i], min_piece):
            found = matcher.describe(matcher.refine(T, matcher.sample(matcher.c.points_in(region)), sliding), region)
            if found.overlap >= min_overlap:
                parts.append((region, found))
    return sorted(merge_alike(matcher, parts, min_shift), key=lambda part: -len(part[0]))


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
