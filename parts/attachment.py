"""A joint keeps its part attached to the body: the prior that settles motions the two states cannot tell apart.

Two-state evidence has exact ambiguities. Identical drawers pulled out of identical slots are explained as well by
a motion into a neighbour's slot (drawer A's front lands on drawer B's closed front, its tray hides inside either
way), and a flat part (a lid, a door) is explained as well by its `twin`: the rotation by the other angle, theta - pi,
about a parallel axis, which flips the slab about its mid-plane onto where the true motion puts it. What tells the
true motion is physics, not the images: the part stays attached to the body. Where the part touches the body in the
canonical state (its `contact` samples), a real joint moves it least — a hinge not at all, a drawer by its pull
alone — so among motions that explain the part equally well, the one of least `attachment` displacement wins. A slide
keeps its part `engaged`: it travels at most the part's own length along it (a drawer pulled farther falls out), so a
translation that carries a part into unseen space, explained as well as the truth where most of it hides, is no slide.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from parts.motion import MIN_TURN, rotation_axis
from utils.neighbours import query
from utils.rigid_fit import apply_transform, make_transform

ATTACHMENT_QUANTILE = 0.1  # the displacement of the contact samples that stay most in place (a hinge is one edge)


def twin(T: np.ndarray, points: np.ndarray) -> np.ndarray | None:
    """(4, 4) the rotation by T's angle minus pi about a parallel axis that moves the centroid of `points` (N, 3) as
    T does (None for a motion without rotation): a slab flipped about its mid-plane onto where T puts it."""
    direction, angle = rotation_axis(T)
    if angle <= MIN_TURN:
        return None
    R = Rotation.from_rotvec(direction * (angle - np.pi)).as_matrix()
    centre = points.mean(axis=0)
    return make_transform(R, apply_transform(T, centre[None])[0] - R @ centre)


def contact(points: np.ndarray, body: cKDTree, reach: float) -> np.ndarray:
    """(K, 3) the part's samples `points` (N, 3) within `reach` of the body's samples (their tree `body`)."""
    if len(points) == 0 or body.n == 0:
        return np.zeros((0, 3))
    near = np.isfinite(query(body, points, distance_upper_bound=reach)[0])
    return points[near]


def attachment(T: np.ndarray, touching: np.ndarray) -> float:
    """How far T moves the part where it touches the body: the ATTACHMENT_QUANTILE displacement of the contact
    samples `touching` (K, 3) (0 when the part touches nothing)."""
    if len(touching) == 0:
        return 0.0
    shift = np.linalg.norm(apply_transform(T, touching) - touching, axis=1)
    return float(np.quantile(shift, ATTACHMENT_QUANTILE))


def engaged(T: np.ndarray, points: np.ndarray, reach: float) -> bool:
    """Whether the translation of T keeps the part `points` (N, 3) engaged: it is at most the part's extent along it
    plus `reach`."""
    t = T[:3, 3]
    length = float(np.linalg.norm(t))
    return length <= float(np.ptp(points @ (t / max(length, 1e-12)))) + reach
