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
evidence against the prism. Without a sliding part nothing changes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from utils.part_matching import PartMatcher

if TYPE_CHECKING:
    from utils.part_selection import PartEstimate

FRONT_DEPTH = 2  # voxels behind a column's first changed voxel within which its owning front voxel must lie
CLEAR_MARGIN = 0.5  # voxels by which a front voxel's landing must beat every other part's motion


def complete_sliding_parts(matcher: PartMatcher, parts: list[PartEstimate]) -> None:
    """In place: every prismatic part of `parts` (their `transform` final) gives up its voxels in columns other parts
    own and takes the canonical dynamic voxels behind the fronts it owns (see the module docstring)."""
    sliding = [i for i, part in enumerate(parts)
               if part.joint_type == "prismatic" and np.linalg.norm(part.transform[:3, 3]) > 0]
    if not sliding:
        return
    grid, voxels = matcher.grid, matcher.c.dynamic_voxels
    label = np.full(len(voxels), -1)
    keys = grid.keys(voxels)
    for i, part in enumerate(parts):
        label[np.isin(keys, grid.keys(part.voxels))] = i
    dist = np.stack([matcher.landing(part.transform, voxels)[0] for part in parts])
    clear = matcher.clear(dist, CLEAR_MARGIN) if len(parts) > 1 else dist[0] <= matcher.tolerance
    seed = clear & (np.argmin(dist, axis=0) == label)
    centres = grid.centres(voxels)
    object_centre = matcher.c.points.mean(axis=0)
    prisms = {}
    for i in sliding:
        depth, column = _columns(centres, parts[i].transform[:3, 3], object_centre, centres[label == i].mean(axis=0),
                                 grid.voxel_size)
        owner = _column_owners(depth, column, seed, label, grid.voxel_size)
        prisms[i] = depth, column, owner
        label[(label == i) & ~seed & (owner[column] >= 0) & (owner[column] != i)] = -1
    for i in sliding:
        part = parts[i]
        depth, column, owner = prisms[i]
        behind = (owner[column] == i) & (depth >= _front_depth(depth, column, seed)[column])
        candidates = np.flatnonzero(behind & (label != i))
        if len(candidates) == 0:
            continue
        landed = matcher.landing(part.transform, voxels[candidates])[1]
        consistent = landed | matcher.hidden(part.transform, voxels[candidates], landed)
        label[candidates[consistent]] = i
    for i, part in enumerate(parts):
        outside = ~np.isin(grid.keys(part.voxels), keys)  # not among the changes: kept as they are
        part.voxels = np.concatenate([part.voxels[outside], voxels[label == i]])


def _columns(centres: np.ndarray, translation: np.ndarray, object_centre: np.ndarray, part_centre: np.ndarray,
             voxel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Depth (M,) behind the front (smallest at the outermost voxel along the axis of `translation` (3,), outward
    being away from `object_centre` (3,) towards `part_centre` (3,)) and column id (M,) of each of `centres` (M, 3)."""
    axis = translation / np.linalg.norm(translation)
    if np.dot(part_centre - object_centre, axis) < 0:
        axis = -axis  # points outward now
    helper = np.eye(3)[np.argmin(np.abs(axis))]
    u = np.cross(axis, helper)
    u /= np.linalg.norm(u)
    v = np.cross(axis, u)
    pixels = np.round(centres @ np.stack([u, v], axis=1) / voxel_size).astype(np.int64)
    column = np.unique(pixels, axis=0, return_inverse=True)[1].ravel()
    return -(centres @ axis), column


def _front_depth(depth: np.ndarray, column: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """(C,) depth of each column's first seed voxel (inf where it has none)."""
    front = np.full(column.max() + 1, np.inf)
    np.minimum.at(front, column[seed], depth[seed])
    return front


def _column_owners(depth: np.ndarray, column: np.ndarray, seed: np.ndarray, label: np.ndarray,
                   voxel_size: float) -> np.ndarray:
    """(C,) part owning each column: the label of its first seed voxel when that lies within `FRONT_DEPTH` voxels of
    the column's first voxel; -1 otherwise."""
    first = np.full(column.max() + 1, np.inf)
    np.minimum.at(first, column, depth)
    front = _front_depth(depth, column, seed)
    is_front = seed & (depth == front[column])
    owner = np.full(len(first), -1)
    owner[column[is_front]] = label[is_front]
    return np.where(front <= first + FRONT_DEPTH * voxel_size, owner, -1)
