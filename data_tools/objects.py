"""Procedural articulated objects built from boxes: cabinet, drawers, fridge, storage, laptop, oven.

Raw frame of every builder: the object stands on z = 0, z is up and its front faces -y. Bodies are hollow open-front
boxes made of slabs with real wall thickness, drawers are open-top boxes, doors are slabs hinged on one edge of
their outer face so that a positive angle swings them outwards. Builders return part geometry at joint value 0
(closed) plus each joint's opening; `build_object` adds textures, picks which state is open and normalises the
object into a sphere around the origin.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import numpy as np
import trimesh

from data_tools.articulated import STATE_NAMES, Joint, ObjectSpec, Part, normalise
from data_tools.textures import random_texture

GAP = 0.005  # clearance between a moving part and the body (raw units, ~metres)
OUTWARD = np.array([0.0, -1.0, 0.0])  # fronts face -y
OBJECT_RADIUS = 0.9  # both states fit a sphere of this radius around the origin


class PartGeometry(NamedTuple):
    """A part before texturing: its closed-configuration mesh and its joint (None for the static body)."""

    name: str
    mesh: trimesh.Trimesh
    joint: Joint | None


def box(lo: np.ndarray | list[float], hi: np.ndarray | list[float]) -> trimesh.Trimesh:
    """Axis-aligned box between the corners `lo` (3,) and `hi` (3,)."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    if np.any(hi <= lo):
        raise ValueError(f"box corners must satisfy lo < hi, got {lo} and {hi}")
    return trimesh.creation.box(extents=hi - lo, transform=trimesh.transformations.translation_matrix((lo + hi) / 2))


def merge(meshes: list[trimesh.Trimesh]) -> trimesh.Trimesh:
    """One mesh holding all `meshes` (vertices are not welded)."""
    return trimesh.util.concatenate(meshes)


def open_box(lo: np.ndarray | list[float], hi: np.ndarray | list[float], wall: float, open_axis: int,
             open_sign: int) -> list[trimesh.Trimesh]:
    """The five wall slabs (thickness `wall`) of the box `lo`..`hi`, leaving open its face on side `open_sign` (+1/-1)
    of `open_axis`."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    slabs = []
    for axis in range(3):
        for sign in (-1, 1):
            if (axis, sign) == (open_axis, open_sign):
                continue
            slab_lo, slab_hi = lo.copy(), hi.copy()
            if sign < 0:
                slab_hi[axis] = lo[axis] + wall
            else:
                slab_lo[axis] = hi[axis] - wall
            slabs.append(box(slab_lo, slab_hi))
    return slabs


def carcass(width: float, depth: float, height: float, wall: float) -> list[trimesh.Trimesh]:
    """Hollow body standing on z = 0, centred on x and y, open at the front (-y)."""
    return open_box([-width / 2, -depth / 2, 0.0], [width / 2, depth / 2, height], wall, open_axis=1, open_sign=-1)


def shelf(x0: float, x1: float, z: float, depth: float, wall: float) -> trimesh.Trimesh:
    """Horizontal board between x0 and x1 at height z inside a carcass of the given depth, set back from the front."""
    return box([x0, -depth / 2 + 0.03, z - wall / 2], [x1, depth / 2 - wall, z + wall / 2])


def front_handle(x: float, z: float, length: float, vertical: bool, face_y: float) -> trimesh.Trimesh:
    """A bar handle centred at (x, z) on a front face at y = face_y, sticking out towards -y."""
    half_x, half_z = (0.012, length / 2) if vertical else (length / 2, 0.012)
    return box([x - half_x, face_y - 0.03, z - half_z], [x + half_x, face_y, z + half_z])


def hinge_joint(lo: np.ndarray, hi: np.ndarray, free_axis: int, hinge_at_low: bool, outward: np.ndarray,
                opened: float) -> Joint:
    """Revolute joint of the slab `lo`..`hi` hinged on its outer face's edge at the low/high end of `free_axis`.

    The axis direction is chosen so that a positive angle moves the free edge along `outward` (3,), a unit axis
    vector; hinging on the outer face keeps the swinging slab clear of what it closes.
    """
    origin = (lo + hi) / 2
    origin[free_axis] = lo[free_axis] if hinge_at_low else hi[free_axis]
    out_axis = int(np.argmax(np.abs(outward)))
    origin[out_axis] = hi[out_axis] if outward[out_axis] > 0 else lo[out_axis]
    free_dir = np.eye(3)[free_axis] * (1.0 if hinge_at_low else -1.0)
    return Joint("revolute", origin, np.cross(free_dir, outward), 0.0, opened)


def front_door(name: str, x0: float, x1: float, z0: float, z1: float, front_y: float, thickness: float,
               hinge: str, opened: float) -> PartGeometry:
    """A door covering x0..x1, z0..z1 just in front of the plane y = front_y, hinged on its left, right or bottom."""
    lo = np.array([x0, front_y - GAP - thickness, z0])
    hi = np.array([x1, front_y - GAP, z1])
    if hinge == "bottom":
        handle = front_handle((x0 + x1) / 2, z1 - 0.06, 0.5 * (x1 - x0), vertical=False, face_y=lo[1])
        joint = hinge_joint(lo, hi, free_axis=2, hinge_at_low=True, outward=OUTWARD, opened=opened)
    elif hinge in ("left", "right"):
        handle_x = x1 - 0.06 if hinge == "left" else x0 + 0.06
        handle = front_handle(handle_x, (z0 + z1) / 2, min(0.3, 0.4 * (z1 - z0)), vertical=True, face_y=lo[1])
        joint = hinge_joint(lo, hi, free_axis=0, hinge_at_low=hinge == "left", outward=OUTWARD, opened=opened)
    else:
        raise ValueError(f"door hinge must be 'left', 'right' or 'bottom', got {hinge!r}")
    return PartGeometry(name, merge([box(lo, hi), handle]), joint)


def drawer(name: str, x0: float, x1: float, z0: float, z1: float, front_y: float, depth: float, wall: float,
           thickness: float, open_fraction: float) -> PartGeometry:
    """A drawer for the front cell x0..x1, z0..z1 (bounds through the middle of the surrounding walls).

    Its front panel covers the cell in front of y = front_y; its open-top box reaches `depth` into the body and
    stays clear of walls up to `wall` thick. It slides out (-y) by `open_fraction` of its depth.
    """
    panel_lo = np.array([x0 + GAP, front_y - GAP - thickness, z0 + GAP])
    panel_hi = np.array([x1 - GAP, front_y - GAP, z1 - GAP])
    inset = wall + 2 * GAP
    tray = open_box([x0 + inset, front_y - GAP, z0 + inset], [x1 - inset, front_y - GAP + depth, z1 - inset - 0.02],
                    0.6 * wall, open_axis=2, open_sign=1)
    handle = front_handle((x0 + x1) / 2, (z0 + z1) / 2, 0.4 * (x1 - x0), vertical=False, face_y=panel_lo[1])
    origin = np.array([(x0 + x1) / 2, panel_lo[1], (z0 + z1) / 2])
    joint = Joint("prismatic", origin, OUTWARD, 0.0, open_fraction * depth)
    return PartGeometry(name, merge([box(panel_lo, panel_hi), *tray, handle]), joint)


def _cabinet(rng: np.random.Generator) -> list[PartGeometry]:
    """One-door cabinet: shelves inside, a door on a vertical hinge at its left or right edge."""
    width, depth, height = rng.uniform(0.5, 0.8), rng.uniform(0.4, 0.6), rng.uniform(0.8, 1.3)
    wall, thickness = rng.uniform(0.02, 0.035), rng.uniform(0.02, 0.03)
    n_shelves = int(rng.integers(1, 3))
    shelves = [shelf(-width / 2 + wall, width / 2 - wall, height * (i + 1) / (n_shelves + 1), depth, wall)
               for i in range(n_shelves)]
    body = PartGeometry("body", merge(carcass(width, depth, height, wall) + shelves), None)
    door = front_door("door", -width / 2 + GAP, width / 2 - GAP, GAP, height - GAP, -depth / 2, thickness,
                      hinge=str(rng.choice(["left", "right"])), opened=rng.uniform(40, 80))
    return [body, door]


def _drawers(rng: np.random.Generator) -> list[PartGeometry]:
    """Chest of 2-3 stacked drawers (bottom to top) separated by horizontal boards."""
    n_drawers = int(rng.integers(2, 4))
    width, depth = rng.uniform(0.6, 0.9), rng.uniform(0.4, 0.55)
    height = n_drawers * rng.uniform(0.22, 0.3)
    wall, thickness = rng.uniform(0.02, 0.03), rng.uniform(0.02, 0.03)
    bounds = np.linspace(0.0, height, n_drawers + 1)
    dividers = [box([-width / 2 + wall, -depth / 2, z - wall / 2], [width / 2 - wall, depth / 2 - wall, z + wall / 2])
                for z in bounds[1:-1]]
    body = PartGeometry("body", merge(carcass(width, depth, height, wall) + dividers), None)
    tray_depth = depth - wall - 0.03
    drawers = [drawer(f"drawer_{i}", -width / 2, width / 2, bounds[i], bounds[i + 1], -depth / 2, tray_depth, wall,
                      thickness, rng.uniform(0.35, 0.7)) for i in range(n_drawers)]
    return [body, *drawers]


def _fridge(rng: np.random.Generator) -> list[PartGeometry]:
    """Fridge with two doors hinged on opposite vertical sides: side by side, or stacked above each other.

    A board behind the gap between the doors splits the body into two compartments, as in a real fridge.
    """
    width, depth, height = rng.uniform(0.7, 0.9), rng.uniform(0.6, 0.75), rng.uniform(1.5, 1.9)
    wall, thickness = rng.uniform(0.03, 0.045), rng.uniform(0.04, 0.06)
    front = -depth / 2
    pieces = carcass(width, depth, height, wall)
    pieces += [shelf(-width / 2 + wall, width / 2 - wall, height * f, depth, wall) for f in (0.25, 0.5, 0.75)]
    if rng.uniform() < 0.5:
        split = width * rng.uniform(-0.1, 0.1)
        pieces.append(box([split - wall / 2, front, wall], [split + wall / 2, depth / 2 - wall, height - wall]))
        doors = [
            front_door("door_0", -width / 2 + GAP, split - GAP, GAP, height - GAP, front, thickness, "left",
                       rng.uniform(40, 80)),
            front_door("door_1", split + GAP, width / 2 - GAP, GAP, height - GAP, front, thickness, "right",
                       rng.uniform(40, 80)),
        ]
    else:
        split = height * rng.uniform(0.3, 0.4)
        pieces.append(box([-width / 2 + wall, front, split - wall / 2],
                          [width / 2 - wall, depth / 2 - wall, split + wall / 2]))
        upper = str(rng.choice(["left", "right"]))
        lower = "right" if upper == "left" else "left"
        doors = [
            front_door("door_0", -width / 2 + GAP, width / 2 - GAP, GAP, split - GAP, front, thickness, lower,
                       rng.uniform(40, 80)),
            front_door("door_1", -width / 2 + GAP, width / 2 - GAP, split + GAP, height - GAP, front, thickness,
                       upper, rng.uniform(40, 80)),
        ]
    return [PartGeometry("body", merge(pieces), None), *doors]


def _storage(rng: np.random.Generator) -> list[PartGeometry]:
    """Storage unit: two drawers side by side on top, a double door below (hinged on the outer sides).

    A full-height middle board separates the drawers and sits behind the gap between the doors.
    """
    width, depth, height = rng.uniform(0.9, 1.2), rng.uniform(0.4, 0.55), rng.uniform(0.9, 1.2)
    wall, thickness = rng.uniform(0.02, 0.03), rng.uniform(0.02, 0.03)
    split = height * (1.0 - rng.uniform(0.25, 0.35))
    boards = [
        box([-width / 2 + wall, -depth / 2, split - wall / 2], [width / 2 - wall, depth / 2 - wall, split + wall / 2]),
        box([-wall / 2, -depth / 2, wall], [wall / 2, depth / 2 - wall, height - wall]),
        shelf(-width / 2 + wall, width / 2 - wall, split / 2, depth, wall),
    ]
    body = PartGeometry("body", merge(carcass(width, depth, height, wall) + boards), None)
    tray_depth = depth - wall - 0.03
    front = -depth / 2
    return [
        body,
        drawer("drawer_0", -width / 2, 0.0, split, height, front, tray_depth, wall, thickness, rng.uniform(0.35, 0.7)),
        drawer("drawer_1", 0.0, width / 2, split, height, front, tray_depth, wall, thickness, rng.uniform(0.35, 0.7)),
        front_door("door_0", -width / 2 + GAP, -GAP, GAP, split - GAP, front, thickness, "left", rng.uniform(40, 80)),
        front_door("door_1", GAP, width / 2 - GAP, GAP, split - GAP, front, thickness, "right", rng.uniform(40, 80)),
    ]


def _laptop(rng: np.random.Generator) -> list[PartGeometry]:
    """Laptop: static base with keyboard and touchpad, lid (with screen) hinged along the base's back edge."""
    width, length = rng.uniform(1.2, 1.5), rng.uniform(0.8, 1.0)
    base_t, lid_t, gap = rng.uniform(0.05, 0.08), rng.uniform(0.03, 0.045), 0.012
    base = [
        box([-width / 2, -length / 2, 0.0], [width / 2, length / 2, base_t]),
        box([-0.42 * width, -0.05 * length, base_t], [0.42 * width, 0.42 * length, base_t + 0.004]),
        box([-0.15 * width, -0.45 * length, base_t], [0.15 * width, -0.15 * length, base_t + 0.002]),
    ]
    lid_lo = np.array([-width / 2, -length / 2, base_t + gap])
    lid_hi = np.array([width / 2, length / 2, base_t + gap + lid_t])
    screen = box([-0.45 * width, -0.45 * length, base_t + gap - 0.003], [0.45 * width, 0.45 * length, base_t + gap])
    joint = hinge_joint(lid_lo, lid_hi, free_axis=1, hinge_at_low=False, outward=np.array([0.0, 0.0, 1.0]),
                        opened=rng.uniform(60, 110))
    return [PartGeometry("base", merge(base), None), PartGeometry("lid", merge([box(lid_lo, lid_hi), screen]), joint)]


def _oven(rng: np.random.Generator) -> list[PartGeometry]:
    """Oven: hollow body with a rack and a knob panel on top, door hinged along its bottom edge."""
    width, depth, height = rng.uniform(0.6, 0.8), rng.uniform(0.55, 0.7), rng.uniform(0.6, 0.85)
    wall, thickness = rng.uniform(0.03, 0.04), rng.uniform(0.04, 0.06)
    panel_z = height * (1.0 - rng.uniform(0.15, 0.22))
    panel_y = -depth / 2 - GAP - thickness
    n_knobs = int(rng.integers(3, 5))
    knob_z = (panel_z + height) / 2
    knobs = [box([x - 0.025, panel_y - 0.03, knob_z - 0.025], [x + 0.025, panel_y, knob_z + 0.025])
             for x in np.linspace(-0.3 * width, 0.3 * width, n_knobs)]
    static = carcass(width, depth, height, wall) + [
        shelf(-width / 2 + wall, width / 2 - wall, panel_z / 2, depth, 0.5 * wall),
        box([-width / 2, panel_y, panel_z], [width / 2, -depth / 2, height]),
        *knobs,
    ]
    door = front_door("door", -width / 2 + GAP, width / 2 - GAP, GAP, panel_z - GAP, -depth / 2, thickness,
                      "bottom", rng.uniform(45, 85))
    return [PartGeometry("body", merge(static), None), door]


BUILDERS: dict[str, Callable[[np.random.Generator], list[PartGeometry]]] = {
    "cabinet": _cabinet,
    "drawers": _drawers,
    "fridge": _fridge,
    "storage": _storage,
    "laptop": _laptop,
    "oven": _oven,
}


def categories() -> list[str]:
    """Names of the object categories the generator can build (the CLI's `--category` values)."""
    return list(BUILDERS)


def build_object(category: str, seed: int, open_state: str = "end") -> ObjectSpec:
    """The object of `category` drawn from `seed`, open in `open_state` ("start" or "end") and closed in the other.

    Deterministic by seed. Part hues are spread around the colour wheel so parts are told apart easily.
    """
    if category not in BUILDERS:
        raise ValueError(f"unknown category {category!r}; choose one of {categories()}")
    if open_state not in STATE_NAMES:
        raise ValueError(f"open_state must be one of {STATE_NAMES}, got {open_state!r}")
    if int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    rng = np.random.default_rng([int(seed), 0])
    geometries = BUILDERS[category](rng)
    hues = rng.uniform() + np.arange(len(geometries)) / len(geometries) + rng.uniform(-0.03, 0.03, len(geometries))
    parts = [
        Part(geom.name, geom.mesh, random_texture(rng, hue), _with_open_state(geom.joint, open_state))
        for geom, hue in zip(geometries, hues)
    ]
    return normalise(ObjectSpec(category, int(seed), parts), OBJECT_RADIUS)


def _with_open_state(joint: Joint | None, open_state: str) -> Joint | None:
    """Builders make joints that open from start to end; swap the two values when the start state is the open one."""
    if joint is None or open_state == "end":
        return joint
    return dataclasses.replace(joint, start=joint.end, end=joint.start)
