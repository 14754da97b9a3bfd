"""Rigid motions of parts and their fits: joint-constrained motions and symmetric trimmed ICP.

A motion T (4, 4) maps the canonical state c to the other state o (x' = R x + t). Three models of it:
- rigid: any R, t;
- revolute: a rotation about a line (the screw translation along the rotation axis removed);
- prismatic: a pure translation.

`fit` is ICP under one of these models. It is symmetric when given the other state's side of the part: pairs come
from c's points moved onto o (forward) and from o's points moved back onto c (backward), so a flat door cannot slide
within its own plane (its edges must land both ways) and a part's motion answers for what it shows in both states.
Each iteration keeps the pairs closer than a quantile of their distances (trimming: surfaces that one state hides
have no counterpart) and refits the model on them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from utils.neighbours import query
from utils.rigid_fit import apply_transform, kabsch, make_transform, rotation_about_line

MODELS = ("rigid", "revolute", "prismatic")
MIN_TURN = 1e-6  # radians: a rotation smaller than this has no axis


def invert(T: np.ndarray) -> np.ndarray:
    """The inverse (4, 4) of a rigid motion."""
    R, t = T[:3, :3], T[:3, 3]
    return make_transform(R.T, -R.T @ t)


def rotation_axis(T: np.ndarray) -> tuple[np.ndarray, float]:
    """Unit rotation axis (3,) and angle (radians, in [0, pi]) of a rigid motion (axis x for no rotation)."""
    rotvec = Rotation.from_matrix(T[:3, :3]).as_rotvec()
    angle = float(np.linalg.norm(rotvec))
    return (rotvec / angle if angle > MIN_TURN else np.array([1.0, 0.0, 0.0])), angle


def axis_point(T: np.ndarray) -> np.ndarray:
    """(3,) the point of T's rotation axis closest to the origin (the origin itself for no rotation)."""
    direction, angle = rotation_axis(T)
    if angle <= MIN_TURN:
        return np.zeros(3)
    t = T[:3, 3] - direction * (direction @ T[:3, 3])
    return np.linalg.lstsq(np.eye(3) - T[:3, :3], t, rcond=None)[0]


def constrain(T: np.ndarray, model: str) -> np.ndarray:
    """The motion of `model` nearest to T: revolute drops the translation along the rotation axis, prismatic the
    rotation (keeping T's translation of the origin)."""
    if model == "rigid":
        return T
    if model == "prismatic":
        return make_transform(t=T[:3, 3])
    if model != "revolute":
        raise ValueError(f"motion model must be one of {MODELS}, got {model!r}")
    direction, angle = rotation_axis(T)
    if angle <= MIN_TURN:
        return np.eye(4)
    return make_transform(T[:3, :3], T[:3, 3] - direction * (direction @ T[:3, 3]))


def fit_pairs(source: np.ndarray, target: np.ndarray, model: str) -> np.ndarray:
    """Least-squares motion of `model` (4, 4) taking the paired points `source` (N, 3) onto `target` (N, 3)."""
    if model == "prismatic":
        return make_transform(t=(target - source).mean(axis=0))
    return constrain(kabsch(source, target), model)


@dataclass(frozen=True)
class Side:
    """One state's side of a fit: the points to move (N, 3) and the tree of the points they should land on."""

    points: np.ndarray
    tree: cKDTree


Pairs = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # motion (4, 4) -> paired (source, target) (N, 3)
COARSE_TO_FINE = ((8.0, 1.0), (3.0, 0.8), (1.0, 1.0))  # (reach in tolerances, kept quantile) of each ICP stage


def _icp(T: np.ndarray, model: str, pairs: Pairs, iterations: int, tolerance: float) -> np.ndarray:
    """Refit `model` on the pairs that `pairs` makes under the current motion until it stops changing (by less than
    `tolerance` in any entry), fewer than 3 pairs remain, or `iterations` have run."""
    for _ in range(iterations):
        source, target = pairs(T)
        if len(source) < 3:
            break
        new = fit_pairs(source, target, model)
        change = np.abs(new - T).max()
        T = new
        if change < tolerance:
            break
    return T


def fit(T: np.ndarray, model: str, forward: Side, backward: Side | None = None, *, reach: float,
        keep: float = 0.8, iterations: int = 30, tolerance: float = 1e-6) -> np.ndarray:
    """ICP of `model` from T: forward pairs move `forward.points` (canonical) onto `forward.tree` (the other state);
    backward pairs move `backward.points` (the other state) by T's inverse onto `backward.tree` (canonical). Pairs
    farther than `reach`, and beyond the `keep` quantile of the distances, are dropped each iteration."""

    def pairs(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dist, nearest = query(forward.tree, apply_transform(T, forward.points), distance_upper_bound=reach)
        kept = _kept(dist, keep)
        sources, targets = [forward.points[kept]], [forward.tree.data[nearest[kept]]]
        if backward is not None and len(backward.points):
            dist, nearest = query(backward.tree, apply_transform(invert(T), backward.points), distance_upper_bound=reach)
            kept = _kept(dist, keep)
            sources.append(backward.tree.data[nearest[kept]])
            targets.append(backward.points[kept])
        return np.concatenate(sources), np.concatenate(targets)

    return _icp(constrain(T, model), model, pairs, iterations, tolerance)


def _kept(dist: np.ndarray, keep: float) -> np.ndarray:
    """(N,) bool: finite pair distances `dist` (N,) within their `keep` quantile."""
    finite = np.isfinite(dist)
    if not finite.any():
        return finite
    return finite & (dist <= np.quantile(dist[finite], keep))


def fit_coarse_to_fine(T: np.ndarray, model: str, forward: Side, backward: Side | None, tolerance: float) -> np.ndarray:
    """`fit` from far pairs (within 8 `tolerance`s, all kept) to near ones (3 tolerances, the worst 20 % trimmed)
    to landing ones (within one tolerance): a surface hidden in the other state pairs with whatever lies near its
    true place (a door's inner face with the closed door's outer face, a door's thickness away), and only the last
    stage drops such pairs."""
    for reach, keep in COARSE_TO_FINE:
        T = fit(T, model, forward, backward, reach=reach * tolerance, keep=keep)
    return T


def moved_apart(A: np.ndarray, B: np.ndarray, points: np.ndarray) -> float:
    """Mean distance (scene units) between `points` (N, 3) moved by A and by B: how differently two motions move them."""
    return float(np.linalg.norm(apply_transform(A, points) - apply_transform(B, points), axis=1).mean())


Match = Callable[[np.ndarray, np.ndarray, float], tuple[np.ndarray, np.ndarray]]  # (points, sides, reach) ->
# (distance (N,), index (N,) of the matched target point, inf / any where none)


def fit_facing(T: np.ndarray, points: np.ndarray, sides: np.ndarray, match: Match, targets: np.ndarray,
               tolerance: float, model: str = "rigid", iterations: int = 30) -> np.ndarray:
    """ICP of `model` of `points` (N, 3) seen from `sides` (N, 3) onto `targets` (M, 3), each pair made by `match`
    (points moved by T, sides turned by T, reach) with a target seen from the same side, coarse to fine as
    `fit_coarse_to_fine`: a door's outer face never pairs with the inner face it lies a board's thickness from."""
    T = constrain(T, model)
    for reach, keep in COARSE_TO_FINE:

        def pairs(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            dist, nearest = match(apply_transform(T, points), sides @ T[:3, :3].T, reach * tolerance)
            kept = _kept(dist, keep)
            return points[kept], targets[nearest[kept]]

        T = _icp(T, model, pairs, iterations, 1e-6)
    return T


def is_translation(T: np.ndarray) -> bool:
    """Whether the motion T (4, 4) has no rotation (within MIN_TURN)."""
    return rotation_axis(T)[1] <= MIN_TURN


def compass_search(cost: Callable[[np.ndarray], float], x: np.ndarray, step: float, min_step: float
                   ) -> tuple[np.ndarray, float]:
    """A local minimum (x, cost(x)) of `cost` from x (D,) by compass search: try a step either way along each axis,
    move on any improvement, halve the step when none improves, stop below `min_step`. For costs that count
    samples (piecewise constant, no gradient) over few dimensions."""
    x = np.asarray(x, dtype=np.float64)
    best = cost(x)
    while step >= min_step:
        improved = False
        for axis in range(len(x)):
            for sign in (1.0, -1.0):
                trial = x.copy()
                trial[axis] += sign * step
                value = cost(trial)
                if value < best:
                    x, best, improved = trial, value, True
        if not improved:
            step /= 2
    return x, best


BOX_TRIM = 0.005  # fraction of the samples left out at each end of a box's extent: stray samples do not stretch it
ALONG = 1e-9  # relative: a translation this close to parallel with an axis runs along it (`along_axis` made it so)
BOX_TURNS = 90  # in-plane orientations (a degree apart) a box is tried in about each principal axis


@dataclass(frozen=True)
class Box:
    """An oriented box: its axes (3, 3) as rows, and the low and high ends (3,) of its extent along each, about
    `centre` (3,)."""

    centre: np.ndarray
    axes: np.ndarray
    low: np.ndarray
    high: np.ndarray


def box_frame(points: np.ndarray) -> Box:
    """The tightest box of `points` (N, 3), its extent between the BOX_TRIM quantiles about the points' mean. Its
    orientation: the principal axes, then turned about one of them by the quarter-turn angle of least trimmed volume.
    Principal axes alone follow the edges of a long box but not those of a square panel or front, whose in-plane
    variances are equal."""
    centre = points.mean(axis=0)
    centred = points - centre
    principal = np.linalg.svd(centred, full_matrices=False)[2]
    angles = np.radians(np.arange(BOX_TURNS))
    best = (np.inf, principal)
    for a in range(3):
        b, e = principal[(a + 1) % 3], principal[(a + 2) % 3]
        pb, pe = centred @ b, centred @ e
        turned_b = np.cos(angles)[:, None] * pb + np.sin(angles)[:, None] * pe
        turned_e = -np.sin(angles)[:, None] * pb + np.cos(angles)[:, None] * pe
        area = np.ptp(np.quantile(turned_b, [BOX_TRIM, 1 - BOX_TRIM], axis=1), axis=0) * \
            np.ptp(np.quantile(turned_e, [BOX_TRIM, 1 - BOX_TRIM], axis=1), axis=0)
        k = int(np.argmin(area))
        height = np.ptp(np.quantile(centred @ principal[a], [BOX_TRIM, 1 - BOX_TRIM]))
        if area[k] * height < best[0]:
            c, s = np.cos(angles[k]), np.sin(angles[k])
            best = (area[k] * height, np.stack([principal[a], c * b + s * e, -s * b + c * e]))
    axes = best[1]
    low, high = np.quantile(centred @ axes.T, [BOX_TRIM, 1 - BOX_TRIM], axis=0)
    return Box(centre, axes, low, high)


def axis_scan(cost: Callable[[np.ndarray], float], box: Box, step: float, beyond: float) -> list[np.ndarray]:
    """(3,) for each axis of a part's `box`, the translation along it of least `cost`, scanned `step` apart either
    way up to the box's extent along it plus `beyond` (how far a slide stays engaged)."""
    found = []
    for axis, extent in zip(box.axes, box.high - box.low):
        steps = np.arange(step, float(extent) + beyond + step / 2, step)
        shifts = np.concatenate([steps, -steps])
        found.append(shifts[int(np.argmin([cost(s * axis) for s in shifts]))] * axis)
    return found


def along_axis(cost: Callable[[np.ndarray], float], t: np.ndarray, step: float, min_step: float) -> np.ndarray:
    """(3,) the translation of least `cost` along the direction of `t` (3,), by compass search on its length from
    |t|: a slide held to one axis, which the cost cannot pull sideways where it is flat across the axis."""
    direction = t / np.linalg.norm(t)
    length = compass_search(lambda x: cost(x[0] * direction), np.array([np.linalg.norm(t)]), step, min_step)[0][0]
    return length * direction


def along_box(options: list[np.ndarray], axes: np.ndarray) -> np.ndarray:
    """(len(options),) bool: the motions that are translations along one of `axes` (3, 3) (to ALONG, relative)."""
    along = []
    for T in options:
        norm = np.linalg.norm(T[:3, 3])
        along.append(bool(is_translation(T) and norm > 0 and np.abs(axes @ T[:3, 3]).max() >= norm * (1 - ALONG)))
    return np.array(along)


def hinge_scan(cost: Callable[[np.ndarray], float], box: Box, step: float, fine: float
               ) -> list[tuple[np.ndarray, float]]:
    """(T, cost(T)) for each of the 12 edges of a part's `box`: the rotation about the edge of least `cost`, scanned
    `step` radians apart over a whole turn, then refined down to `fine` radians. Doors, lids and screens turn about an
    edge of their own box; a start there does not depend on which surface pieces the hypotheses paired."""
    axes, low, high = box.axes, box.low, box.high
    angles = np.arange(step, 2 * np.pi - step / 2, step) - np.pi
    angles = angles[np.abs(angles) > step / 2]
    found = []
    for a in range(3):
        b, e = (a + 1) % 3, (a + 2) % 3
        for u in (low[b], high[b]):
            for v in (low[e], high[e]):
                point = box.centre + u * axes[b] + v * axes[e]

                def edge_cost(x: np.ndarray) -> float:
                    return cost(rotation_about_line(point, axes[a], float(x[0])))

                start = angles[int(np.argmin([edge_cost(np.array([x])) for x in angles]))]
                x, value = compass_search(edge_cost, np.array([start]), step / 2, fine)
                found.append((rotation_about_line(point, axes[a], float(x[0])), value))
    return found
