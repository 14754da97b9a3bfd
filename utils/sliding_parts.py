"""Stage 3: complete each sliding (prismatic) part with the body behind its front.

An open drawer shows its tray and back from above, yet nothing in the two states says which motion they follow:
the other state hides them wherever any drawer's motion puts them (inside the closed body), the stretch of the tray
that overlaps itself in both states is static and cuts the rear off from the front, and a tray may land by chance
on a neighbouring drawer's front under that drawer's motion. What the data do fix is the front: the outermost
surface along the sliding axis lands exactly only under its own drawer's motion.

So a drawer is a prism along its axis: looking along the axis from outside, each column (a voxel-sized ray) whose
first changed voxel is a front voxel that clearly lands under one part's motion belongs to that part. A sliding part
first gives up its voxels in columns that belong to another part (a door or drawer in front), except those that land
clearly under its own motion; then it takes the canonical changes behind its own fronts, from no part or any other,
unless its motion contradicts them (they neither land nor are hidden): a chance landing under a door's turn is no
evidence against the prism. Last, a piece of a sliding part cut off from its body and lying outside it, against
another drawer, without a clear landing of its own, goes to that drawer (`_hand_over_detached`: columns miss such a
patch of a tray floor when the front before it owns no column). Without a sliding part nothing changes.

Before that, a sliding part that owns almost no front is no drawer: two drawers pulled out alike (half a voxel
apart) share one motion, which no motion cost can split, and the spare motion collects chance landings. The shared
front is then cut in two along a straight line across the axis, where the two halves' own refitted pulls land
their fronts best (`_separate_alike`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from scipy import ndimage

from utils.part_matching import PartMatcher
from utils.voxel_grid import FULL_CONNECTIVITY, dilate

if TYPE_CHECKING:
    from utils.part_selection import PartEstimate

FRONT_DEPTH = 2  # voxels behind a column's first changed voxel within which its owning front voxel must lie
CLEAR_MARGIN = 0.5  # voxels by which a front voxel's landing must beat every other part's motion
CUTS = (0.3, 0.4, 0.5, 0.6, 0.7)  # quantiles of the pixel positions where `_best_cut` tries to cut two fronts apart
EMPTY_FRONT = 0.1  # a sliding part owning fewer columns than this fraction of the largest one's owns no drawer
DETACHED_TOUCH = 0.1  # a detached piece lies against another part when this fraction of its voxels neighbour it


def complete_sliding_parts(matcher: PartMatcher, parts: list[PartEstimate]) -> list[int]:
    """In place: every prismatic part of `parts` (their `transform` final) gives up its voxels in columns other parts
    own and takes the canonical dynamic voxels behind the fronts it owns (see the module docstring); a sliding part
    that owns almost no front first gets half of the largest one's (`_separate_alike`). Returns the indices of the
    parts whose motion changed (their joint models are to be fitted again)."""
    sliding = [i for i, part in enumerate(parts)
               if part.joint_type == "prismatic" and np.linalg.norm(part.transform[:3, 3]) > 0]
    if not sliding:
        return []
    grid, voxels = matcher.grid, matcher.c.dynamic_voxels
    label = np.full(len(voxels), -1)
    keys = grid.keys(voxels)
    for i, part in enumerate(parts):
        label[np.isin(keys, grid.keys(part.voxels))] = i
    dist = np.stack([matcher.landing(part.transform, voxels)[0] for part in parts])
    seed = matcher.clear(dist, CLEAR_MARGIN) & (np.argmin(dist, axis=0) == label)
    centres = grid.centres(voxels)
    object_centre = matcher.c.points.mean(axis=0)

    def prism(i: int) -> _Prism:
        mine = centres[label == i]
        depth, column, pixels = _columns(centres, parts[i].transform[:3, 3], object_centre,
                                         mine.mean(axis=0) if len(mine) else object_centre, grid.voxel_size)
        front = _front_depth(depth, column, seed)
        return _Prism(depth, column, pixels, front, _column_owners(depth, column, front, seed, label, grid.voxel_size))

    prisms = {i: prism(i) for i in sliding}
    changed = _separate_alike(matcher, parts, sliding, prisms, seed, label, voxels)
    prisms.update({i: prism(i) for i in changed})
    for i in sliding:
        column, owner = prisms[i].column, prisms[i].owner
        label[(label == i) & ~seed & (owner[column] >= 0) & (owner[column] != i)] = -1
    for i in sliding:
        part, (depth, column, _, front, owner) = parts[i], prisms[i]
        behind = (owner[column] == i) & (depth >= front[column])
        candidates = np.flatnonzero(behind & (label != i))
        if len(candidates) == 0:
            continue
        fate = matcher.fate(part.transform, voxels[candidates])
        label[candidates[fate.landed | fate.hidden]] = i
    _hand_over_detached(matcher, parts, sliding, seed, label, voxels)
    for i, part in enumerate(parts):
        outside = ~np.isin(grid.keys(part.voxels), keys)  # not among the changes: kept as they are
        part.voxels = np.concatenate([part.voxels[outside], voxels[label == i]])
    return changed


def _hand_over_detached(matcher: PartMatcher, parts: list[PartEstimate], sliding: list[int], seed: np.ndarray,
                        label: np.ndarray, voxels: np.ndarray) -> None:
    """In place on `label` (M,) (part of each of `voxels` (M, 3)): a piece of a sliding part that is cut off from its
    largest piece (26-connected), lies outside that piece's bounding box, holds none of the part's clear landings
    (`seed`) and lies against another sliding part (`DETACHED_TOUCH` of its voxels next to that part's; the one it
    touches most) goes to that part where its motion lands or hides it.

    A drawer's tray floor overlaps itself in both states and lands under any pull along it, so a neighbour's motion
    that drifts a little sideways can claim a patch of it that no column gives to its own drawer (the columns of a
    stacked drawer's prism start at its front; the patch lies behind another front, in columns no front owns): away
    from the neighbour's body and against its own drawer's, it is told apart by where it lies."""
    grid = matcher.grid
    members = {i: np.flatnonzero(label == i) for i in sliding}  # as the completion left them, like the masks
    masks = {i: grid.mask(voxels[mine]) for i, mine in members.items()}
    near = {i: dilate(mask, 1) for i, mask in masks.items()}
    for i, mine in members.items():
        pieces, count = ndimage.label(masks[i], structure=FULL_CONNECTIVITY)
        if count < 2:
            continue
        piece = grid.lookup(pieces, voxels[mine])
        sizes = np.bincount(piece, minlength=count + 1)
        body = voxels[mine[piece == np.argmax(sizes[1:]) + 1]]
        in_box = np.all((voxels[mine] >= body.min(axis=0) - 1) & (voxels[mine] <= body.max(axis=0) + 1), axis=1)
        held = np.bincount(piece[seed[mine]], minlength=count + 1) > 0
        held |= np.bincount(piece, weights=in_box, minlength=count + 1) >= 0.5 * sizes
        others = [j for j in sliding if j != i]
        touching = np.stack([np.bincount(piece, weights=grid.lookup(near[j], voxels[mine]), minlength=count + 1)
                             for j in others])
        receiver = np.array(others)[np.argmax(touching, axis=0)]
        moving = ~held & (touching.max(axis=0) >= DETACHED_TOUCH * sizes)
        for j in others:
            candidates = mine[(moving & (receiver == j))[piece]]
            if len(candidates):
                fate = matcher.fate(parts[j].transform, voxels[candidates])
                label[candidates[fate.landed | fate.hidden]] = j


class _Prism(NamedTuple):
    """A sliding part's view along its axis: per voxel its depth behind the front and column id, per column its
    pixel (C, 2), the depth of its first seed voxel (C,) (inf: none) and owning part (C,) (-1: none)."""

    depth: np.ndarray
    column: np.ndarray
    pixels: np.ndarray
    front: np.ndarray
    owner: np.ndarray


def _separate_alike(matcher: PartMatcher, parts: list[PartEstimate], sliding: list[int], prisms: dict[int, _Prism],
                    seed: np.ndarray, label: np.ndarray, voxels: np.ndarray) -> list[int]:
    """In place on `parts` and `label` (M,) (part of each of `voxels` (M, 3)): while a sliding part owns fewer columns
    than `EMPTY_FRONT` of the largest one's, it is no drawer; the largest then holds two drawers pulled out alike
    (37.3 and 36.8 cm: half a voxel apart, which no motion cost tells apart, and one motion is spared for chance
    landings). Its columns are cut in two by a straight line (`_best_cut`: stacked or side-by-side fronts), each half
    with its own translation, and the voxels of the second half go to the empty part. Returns the parts changed."""
    changed: list[int] = []
    left = list(sliding)
    while len(left) >= 2:
        owned = {i: int(np.sum(prisms[i].owner == i)) for i in left}
        largest, empty = max(left, key=owned.get), min(left, key=owned.get)
        if owned[empty] >= EMPTY_FRONT * owned[largest] or owned[largest] < 2:
            break
        prism = prisms[largest]
        axis, cut, motions = _best_cut(matcher, parts[largest].transform, prism, largest, seed, label, voxels)
        label[label == empty] = -1
        # every voxel of the pair beyond the line, also in columns it does not own: its clear landings there stay
        # its own in the completion below, and belong to the drawer on their side
        label[(label == largest) & (prism.pixels[prism.column, axis] > cut)] = empty
        for i, motion in zip((largest, empty), motions):
            parts[i].rigid_transform = parts[i].transform = motion
            parts[i].fitted = "prismatic"
        changed += [largest, empty]
        left = [i for i in left if i not in (largest, empty)]
    return changed


def _best_cut(matcher: PartMatcher, start: np.ndarray, prism: _Prism, part: int, seed: np.ndarray, label: np.ndarray,
              voxels: np.ndarray) -> tuple[int, float, list[np.ndarray]]:
    """The straight cut of the columns `part` owns in `prism` into two fronts, and their translations (refitted from
    `start` on each front's clear voxels), that land the fronts best: across either pixel axis at one of `CUTS`
    quantiles. The pixel axis, the cut (columns with a larger pixel coordinate are the second front) and the two
    motions."""
    columns = np.flatnonzero(prism.owner == part)
    fronts = seed & (label == part)
    best = (np.inf, 0, np.inf, [start, start])
    for axis in (0, 1):
        for q in CUTS:
            cut = float(np.quantile(prism.pixels[columns, axis], q))
            side = (prism.pixels[columns, axis] > cut).astype(np.int64)
            where = np.full(len(prism.owner), -1)
            where[columns] = side
            score, motions = 0.0, []
            for h in (0, 1):
                points = matcher.c.points_in(voxels[fronts & (where[prism.column] == h)])
                if len(points) < 3:
                    break
                motions.append(matcher.refine(start, matcher.sample(points), translation_only=True))
                score += matcher.truncated_residual(motions[-1], points) * len(points)
            if len(motions) == 2 and score < best[0]:
                best = (score, axis, cut, motions)
    return best[1:]


def _columns(centres: np.ndarray, translation: np.ndarray, object_centre: np.ndarray, part_centre: np.ndarray,
             voxel_size: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Depth (M,) behind the front (smallest at the outermost voxel along the axis of `translation` (3,), outward
    being away from `object_centre` (3,) towards `part_centre` (3,)) and column id (M,) of each of `centres` (M, 3),
    and each column's pixel (C, 2)."""
    axis = translation / np.linalg.norm(translation)
    if np.dot(part_centre - object_centre, axis) < 0:
        axis = -axis  # points outward now
    u = np.cross(axis, np.eye(3)[np.argmin(np.abs(axis))])
    u /= np.linalg.norm(u)
    across = np.stack([u, np.cross(axis, u)], axis=1)  # (3, 2) orthonormal basis of the plane across the axis
    pixels, column = np.unique(np.round(centres @ across / voxel_size).astype(np.int64), axis=0, return_inverse=True)
    return -(centres @ axis), column.ravel(), pixels


def _front_depth(depth: np.ndarray, column: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """(C,) depth of each column's first seed voxel (inf where it has none)."""
    front = np.full(column.max() + 1, np.inf)
    np.minimum.at(front, column[seed], depth[seed])
    return front


def _column_owners(depth: np.ndarray, column: np.ndarray, front: np.ndarray, seed: np.ndarray, label: np.ndarray,
                   voxel_size: float) -> np.ndarray:
    """(C,) part owning each column: the label of its first seed voxel (at depth `front` (C,)) when that lies within
    `FRONT_DEPTH` voxels of the column's first voxel; -1 otherwise."""
    first = np.full(column.max() + 1, np.inf)
    np.minimum.at(first, column, depth)
    is_front = seed & (depth == front[column])
    owner = np.full(len(first), -1)
    owner[column[is_front]] = label[is_front]
    return np.where(front <= first + FRONT_DEPTH * voxel_size, owner, -1)
