"""Do an articulated object's parts stay clear of each other? An exact check on the convex solids they are built of.

Each part of a generated object is a concatenation of closed convex solids (`Part.pieces`). Two convex polyhedra
are disjoint exactly when some axis separates their projections, and the separating axis theorem says it suffices
to try their face normals and the cross products of their edge directions. The largest gap over those axes is a
lower bound of the solids' distance when positive and their penetration depth (negated) when not.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from data_tools.articulated import ObjectSpec


class Solid(NamedTuple):
    """A convex solid: its vertices (V, 3), unit face normals (A, 3) and unit edge directions (E, 3), deduplicated."""

    vertices: np.ndarray
    normals: np.ndarray
    edges: np.ndarray


class Contact(NamedTuple):
    """Two parts (names) of one state whose solids come closer than allowed, and how close (negative: overlap)."""

    state: int
    first: str
    second: str
    separation: float


def unique_directions(vectors: np.ndarray, min_norm: float = 1e-9) -> np.ndarray:
    """Unit directions (K, 3) of `vectors` (N, 3) up to sign, without near-duplicates and near-zero vectors."""
    norms = np.linalg.norm(vectors, axis=1)
    units = vectors[norms > min_norm] / norms[norms > min_norm, None]
    if len(units) == 0:
        return units.reshape(0, 3)
    # Canonical sign: the first clearly non-zero coordinate is positive.
    first = np.argmax(np.abs(units) > 1e-6, axis=1)
    units = units * np.sign(units[np.arange(len(units)), first])[:, None]
    _, keep = np.unique(np.round(units, 6), axis=0, return_index=True)
    return units[np.sort(keep)]


def solid(vertices: np.ndarray, faces: np.ndarray) -> Solid:
    """The Solid of a closed convex mesh (faces index `vertices`)."""
    corners = vertices[faces]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    edges = np.concatenate([corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 1],
                            corners[:, 0] - corners[:, 2]])
    return Solid(vertices, unique_directions(normals), unique_directions(edges))


def separation(a: Solid, b: Solid) -> float:
    """Largest gap between the projections of two convex solids over the separating-axis candidates: > 0 means
    disjoint (and at least that far apart), <= 0 means they overlap by that much."""
    crossed = np.cross(a.edges[:, None, :], b.edges[None, :, :]).reshape(-1, 3)
    axes = np.concatenate([a.normals, b.normals, unique_directions(crossed, min_norm=1e-6)])
    pa, pb = a.vertices @ axes.T, b.vertices @ axes.T
    gaps = np.maximum(pb.min(axis=0) - pa.max(axis=0), pa.min(axis=0) - pb.max(axis=0))
    return float(gaps.max())


def part_solids(spec: ObjectSpec, state: int) -> list[list[Solid]]:
    """Per part, its convex solids posed in `state` (a part without `pieces` counts as one solid)."""
    out = []
    for part, vertices in zip(spec.parts, spec.posed_vertices(state)):
        vertices = vertices.astype(np.float64)
        counts = part.pieces or (len(vertices),)
        starts = np.concatenate([[0], np.cumsum(counts)])
        faces = part.mesh.faces
        owner = np.searchsorted(starts, faces[:, 0], side="right") - 1
        solids = []
        for k, (begin, end) in enumerate(zip(starts[:-1], starts[1:])):
            solids.append(solid(vertices[begin:end], faces[owner == k] - begin))
        out.append(solids)
    return out


def contacts(spec: ObjectSpec, clearance: float) -> list[Contact]:
    """Every pair of parts, in either state, with solids less than `clearance` apart (overlaps included)."""
    found = []
    for state in (0, 1):
        solids = part_solids(spec, state)
        boxes = [[(s.vertices.min(axis=0), s.vertices.max(axis=0)) for s in part] for part in solids]
        for i in range(len(solids)):
            for j in range(i + 1, len(solids)):
                closest = np.inf
                for a, (a_lo, a_hi) in zip(solids[i], boxes[i]):
                    for b, (b_lo, b_hi) in zip(solids[j], boxes[j]):
                        if np.max(np.maximum(b_lo - a_hi, a_lo - b_hi)) >= clearance:
                            continue  # the bounding boxes alone are far enough apart
                        closest = min(closest, separation(a, b))
                if closest < clearance:
                    found.append(Contact(state, spec.parts[i].name, spec.parts[j].name, closest))
    return found
