"""Each part's joint: its motion fitted as a revolute and as a prismatic joint, and the type the evidence prefers.

Both joint models are fitted by symmetric ICP (`parts.motion.fit`) on the part's canonical samples and on the other
state's samples it explains, starting from its rigid motion. Their residuals are compared by the Bayesian
information criterion, n log(r) + k log(n) with r the mean truncated squared distance of the pairs and k the
model's degrees of freedom (revolute 5: axis direction, axis position, angle; prismatic 3). A revolute joint must also
turn about an axis that passes by the part (within half its extent): a small turn about a far-away axis imitates a
translation, and a hinge lies on the part's boundary.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from parts.motion import Side, axis_point, fit_coarse_to_fine, invert, is_translation, rotation_axis
from utils.neighbours import query
from utils.rigid_fit import apply_transform, make_transform

JOINT_TYPES = ("revolute", "prismatic")
DEGREES_OF_FREEDOM = {"revolute": 5, "prismatic": 3}
MAX_AXIS_DISTANCE = 0.5  # of the part's extent: how far a revolute axis may pass from the part
TRUNCATION = 3.0  # tolerances at which pair distances are capped in the residual
MAX_FIT_POINTS = 3000  # points per side the joint fits use (the residuals use all)


@dataclass
class JointFit:
    """One joint model fitted to a part: its motion (4, 4), mean truncated squared pair distance (in tolerances
    squared), pair count, BIC, and whether the model is admissible (a revolute axis passing by the part)."""

    model: str
    transform: np.ndarray
    residual: float
    pairs: int
    bic: float
    admissible: bool = True


def residual(T: np.ndarray, forward: Side, backward: Side, tolerance: float) -> tuple[float, int]:
    """Mean squared pair distance (in tolerances, capped at TRUNCATION) of T over both sides, and the pair count."""
    cap = TRUNCATION * tolerance
    d = [query(forward.tree, apply_transform(T, forward.points), distance_upper_bound=cap)[0]]
    if len(backward.points):
        d.append(query(backward.tree, apply_transform(invert(T), backward.points), distance_upper_bound=cap)[0])
    d = np.minimum(np.concatenate(d), cap) / tolerance
    return float(np.mean(d ** 2)), len(d)


def axis_distance(T: np.ndarray, points: np.ndarray) -> float:
    """Distance from T's rotation axis (a line) to the nearest of `points` (N, 3)."""
    direction, _ = rotation_axis(T)
    rel = points - axis_point(T)
    return float(np.linalg.norm(rel - np.outer(rel @ direction, direction), axis=1).min())


def extent(points: np.ndarray) -> float:
    """Largest extent of `points` (N, 3) along their principal axes."""
    centred = points - points.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    return float(np.ptp(centred @ axes.T, axis=0).max())


def thinned(side: Side, most: int = MAX_FIT_POINTS) -> Side:
    """`side` with at most `most` of its points (every k-th): the fits converge as well on a few thousand pairs."""
    step = max(1, -(-len(side.points) // most))
    return Side(side.points[::step], side.tree)


def fit_joints(rigid: np.ndarray, forward: Side, backward: Side, tolerance: float) -> dict[str, JointFit]:
    """Both joint models of a part (forward: its canonical samples onto the other state's tree; backward: the other
    state's samples it explains onto the canonical tree), from its rigid motion. A part whose motion is a translation
    (stage 3 settled it on one: it explains the part as well as any turn, `Discovery.settle`) keeps it as its
    prismatic joint, and its revolute fit is not admissible: ICP would pair the tray such a part hides in both states
    with the body's walls and turn it."""
    slides = is_translation(rigid)
    shift = (apply_transform(rigid, forward.points) - forward.points).mean(axis=0)
    starts = {"revolute": rigid, "prismatic": make_transform(t=shift)}
    fits = {}
    fit_forward, fit_backward = thinned(forward), thinned(backward)
    for model, start in starts.items():
        T = rigid if slides and model == "prismatic" else \
            fit_coarse_to_fine(start, model, fit_forward, fit_backward, tolerance)
        r, n = residual(T, forward, backward, tolerance)
        fits[model] = JointFit(model, T, r, n, n * np.log(r + 1e-6) + DEGREES_OF_FREEDOM[model] * np.log(max(n, 2)))
    revolute = fits["revolute"]
    revolute.admissible = not slides and rotation_axis(revolute.transform)[1] > 0 and (
        axis_distance(revolute.transform, forward.points) <= MAX_AXIS_DISTANCE * extent(forward.points))
    return fits


def preferred_type(fits: dict[str, JointFit]) -> str:
    """The joint type the evidence prefers: the admissible model of lower BIC."""
    admissible = [f for f in fits.values() if f.admissible]
    return min(admissible, key=lambda f: f.bic).model


def assign_types(fits: list[dict[str, JointFit]], types: tuple[str, ...]) -> list[str]:
    """The given joint `types` (a multiset, one per part, any order) assigned to the parts by least total BIC, so a
    table listing 'p, p, r, r' need not know which part stage 3 found first."""
    if len(types) != len(fits):
        raise ValueError(f"{len(types)} joint types given for {len(fits)} parts")
    cost = np.array([[f[t].bic for t in types] for f in fits])
    rows, cols = linear_sum_assignment(cost)
    assigned = [""] * len(fits)
    for row, col in zip(rows, cols):
        assigned[row] = types[col]
    return assigned


def part_side(points: np.ndarray, tree: cKDTree) -> Side:
    """A `Side` of `points` (N, 3) moving onto `tree`."""
    return Side(np.asarray(points, dtype=np.float64), tree)
