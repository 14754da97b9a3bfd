"""Building blocks of the procedural objects: convex solids, hollow bodies, handles, doors, drawers, front grids.

Raw frame of every object: it stands on z = 0, z is up and its front faces -y (OUTWARD). Every part is a list of
closed convex solids ("pieces": boxes and cylinders) so that collision checks can treat each one exactly. Bodies are
hollow boxes made of slabs with real wall thickness, drawers are open-top boxes, doors are slabs hinged on one edge
of their outer face so that a positive angle swings them outwards.

Fronts follow an object's `Style`: overlay fronts cover the body's front edges from just in front of them, inset
fronts sit inside their openings, flush with the body's front or recessed behind it; either way a thin gap
separates every front from its neighbours and from the body, and its handle is a bar, a knob or a recessed grip.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import trimesh

from data_tools.articulated import Joint

OUTWARD = np.array([0.0, -1.0, 0.0])  # fronts face -y
HANDLES = ("bar", "knob", "grip")
FRONTS = ("overlay", "inset")
HINGES = ("left", "right", "bottom", "top")
GAP_RANGE = (0.002, 0.005)  # clearance between a movable part and the body or its neighbours (raw units, ~metres)
THICKNESS_RANGE = (0.018, 0.03)  # of door and drawer fronts
MIN_DOOR_DEG = 15.0  # every door opens at least this much: small motions are part of the test set
MAX_DOOR_DEG = 90.0  # a door within its own cell's footprint (neighbours may be pulled out next to it)
FREE_DOOR_DEG = 105.0  # a door hinged on an outer side of the body, with nothing beside it
MIN_PULL = 0.05  # every drawer slides out at least this far
MAX_PULL_FRACTION = 0.7  # ... and at most this share of its depth
SEGMENTS = 20  # of cylinders

Rect = tuple[float, float, float, float]  # x0, x1, z0, z1 of a region of an object's front


class PartGeometry(NamedTuple):
    """A part before texturing: its closed-configuration solids, its joint (None for the static body) opening from 0
    to a value drawn from a range, and the top of that range (`largest`)."""

    name: str
    pieces: list[trimesh.Trimesh]
    joint: Joint | None
    largest: float = 0.0


class Opening(NamedTuple):
    """A joint's drawn opening (degrees or scene units) and the largest value it could have been drawn as."""

    value: float
    largest: float


def draw_opening(rng: np.random.Generator, lo: float, hi: float) -> Opening:
    """An opening drawn uniformly from lo..hi: small and large motions alike."""
    return Opening(float(rng.uniform(lo, hi)), float(hi))


@dataclass(frozen=True)
class Style:
    """How an object's fronts are made: gap to neighbours, overlay/inset, recess of inset fronts behind the body's
    front plane, handle kind and front thickness."""

    gap: float
    front: str
    recess: float
    handle: str
    thickness: float

    def __post_init__(self) -> None:
        if self.front not in FRONTS:
            raise ValueError(f"front must be one of {FRONTS}, got {self.front!r}")
        if self.handle not in HANDLES:
            raise ValueError(f"handle must be one of {HANDLES}, got {self.handle!r}")

    def front_depth(self) -> float:
        """How far a closed front reaches behind the body's front plane (shelves inside stay behind it)."""
        return self.recess + self.thickness if self.front == "inset" else 0.0


def random_style(rng: np.random.Generator, handles: tuple[str, ...] = HANDLES,
                 thickness: tuple[float, float] = THICKNESS_RANGE) -> Style:
    """A random style: the recess of an inset front is 0 (flush) or up to twice the gap (so that a door swung past
    90 degrees stays clear of the body's edge)."""
    gap = float(rng.uniform(*GAP_RANGE))
    front = str(rng.choice(FRONTS, p=[0.4, 0.6]))
    recess = float(rng.uniform(0.5, 2.0) * gap) if rng.uniform() < 0.5 else 0.0
    return Style(gap=gap, front=front, recess=recess, handle=str(rng.choice(handles)),
                 thickness=float(rng.uniform(*thickness)))


# ----------------------------------------------------------------------------------------------- solids

def box(lo: np.ndarray | list[float], hi: np.ndarray | list[float]) -> trimesh.Trimesh:
    """Axis-aligned box between the corners `lo` (3,) and `hi` (3,)."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    if np.any(hi <= lo):
        raise ValueError(f"box corners must satisfy lo < hi, got {lo} and {hi}")
    return trimesh.creation.box(extents=hi - lo, transform=trimesh.transformations.translation_matrix((lo + hi) / 2))


def cylinder(centre: np.ndarray | list[float], radius: float, length: float, axis: int) -> trimesh.Trimesh:
    """Closed cylinder (a SEGMENTS-gon prism) of `radius` and `length` along the coordinate `axis`, centred."""
    transform = trimesh.transformations.translation_matrix(centre)
    if axis != 2:
        turn = [0.0, 1.0, 0.0] if axis == 0 else [1.0, 0.0, 0.0]
        transform = transform @ trimesh.transformations.rotation_matrix(np.pi / 2, turn)
    return trimesh.creation.cylinder(radius=radius, height=length, sections=SEGMENTS, transform=transform)


def merge(meshes: list[trimesh.Trimesh]) -> trimesh.Trimesh:
    """One mesh holding all `meshes` in order (vertices are not welded, so each solid keeps its own)."""
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


def slab_with_holes(rect: Rect, y0: float, y1: float, holes: list[Rect]) -> list[trimesh.Trimesh]:
    """The slab over `rect` between y0 and y1 with rectangular through-holes, as boxes (rows of a grid whose lines are
    the holes' edges; neighbouring filled cells of a row are joined)."""
    x0, x1, z0, z1 = rect
    xs = np.unique([x0, x1] + [float(v) for h in holes for v in np.clip(h[:2], x0, x1)])
    zs = np.unique([z0, z1] + [float(v) for h in holes for v in np.clip(h[2:], z0, z1)])
    pieces = []
    for za, zb in zip(zs[:-1], zs[1:]):
        run_start = None
        for i, (xa, xb) in enumerate(zip(xs[:-1], xs[1:])):
            cx, cz = (xa + xb) / 2, (za + zb) / 2
            filled = not any(h[0] < cx < h[1] and h[2] < cz < h[3] for h in holes)
            if filled and run_start is None:
                run_start = xa
            if run_start is not None and (not filled or i == len(xs) - 2):
                end = xb if filled else xa
                pieces.append(box([run_start, y0, za], [end, y1, zb]))
                run_start = None
    return pieces


# ----------------------------------------------------------------------------------------------- handles

def handle_pieces(kind: str, x: float, z: float, face_y: float, length: float, vertical: bool) -> list[trimesh.Trimesh]:
    """A bar (on two posts) or knob(s) centred at (x, z) on a face at y = face_y, sticking out towards -y.

    A bar runs `length` along z (`vertical`) or x; knobs: one, or two `length` apart on a long horizontal front.
    """
    if kind == "bar":
        standoff, bar, post = 0.025, 0.012, 0.01
        along = np.array([0.0, 0.0, 1.0]) if vertical else np.array([1.0, 0.0, 0.0])
        across = np.array([1.0, 0.0, 0.0]) if vertical else np.array([0.0, 0.0, 1.0])
        centre = np.array([x, 0.0, z])
        lo = centre - along * length / 2 - across * bar / 2
        hi = centre + along * length / 2 + across * bar / 2
        pieces = [box([lo[0], face_y - standoff - bar, lo[2]], [hi[0], face_y - standoff, hi[2]])]
        for end in (-1.0, 1.0):
            mid = centre + along * end * (length / 2 - post)
            pieces.append(box([mid[0] - post / 2, face_y - standoff, mid[2] - post / 2],
                              [mid[0] + post / 2, face_y, mid[2] + post / 2]))
        return pieces
    if kind == "knob":
        offsets = [-length / 2, length / 2] if (not vertical and length > 0.3) else [0.0]
        pieces = []
        for offset in offsets:
            kx, kz = (x + offset, z) if not vertical else (x, z + offset)
            pieces.append(cylinder([kx, face_y - 0.011, kz], 0.009, 0.022, axis=1))
            pieces.append(cylinder([kx, face_y - 0.027, kz], 0.017, 0.01, axis=1))
        return pieces
    raise ValueError(f"handle_pieces makes bars and knobs, got {kind!r}")


def front_slab(lo: np.ndarray, hi: np.ndarray, handle: str, x: float, z: float, length: float,
               vertical: bool) -> list[trimesh.Trimesh]:
    """A front slab `lo`..`hi` (outer face at y = lo[1]) with its handle centred at (x, z): a bar or knob on it, or a
    grip pocket `length` long and 3 cm wide, half the slab deep, cut into it."""
    if handle != "grip":
        return [box(lo, hi), *handle_pieces(handle, x, z, float(lo[1]), length, vertical)]
    half_x, half_z = (0.015, length / 2) if vertical else (length / 2, 0.015)
    pocket = (x - half_x, x + half_x, z - half_z, z + half_z)
    if pocket[0] <= lo[0] or pocket[1] >= hi[0] or pocket[2] <= lo[2] or pocket[3] >= hi[2]:
        raise ValueError(f"grip {pocket} does not fit the front {lo}..{hi}")
    bottom = lo[1] + 0.5 * (hi[1] - lo[1])
    return [*slab_with_holes((lo[0], hi[0], lo[2], hi[2]), float(lo[1]), float(hi[1]), [pocket]),
            box([pocket[0], bottom, pocket[2]], [pocket[1], hi[1], pocket[3]])]


# ----------------------------------------------------------------------------------------------- joints, doors

def hinge_joint(lo: np.ndarray, hi: np.ndarray, free_axis: int, hinge_at_low: bool, outward: np.ndarray,
                opened: float) -> Joint:
    """Revolute joint of the slab `lo`..`hi` hinged on its outer face's edge at the low/high end of `free_axis`.

    The axis direction is chosen so that a positive angle moves the free edge along `outward` (3,), a unit axis
    vector; hinging on the outer face keeps the swinging slab clear of what it closes.
    """
    origin = (np.asarray(lo, dtype=np.float64) + hi) / 2
    origin[free_axis] = lo[free_axis] if hinge_at_low else hi[free_axis]
    out_axis = int(np.argmax(np.abs(outward)))
    origin[out_axis] = hi[out_axis] if outward[out_axis] > 0 else lo[out_axis]
    free_dir = np.eye(3)[free_axis] * (1.0 if hinge_at_low else -1.0)
    return Joint("revolute", origin, np.cross(free_dir, outward), 0.0, opened)


def door(name: str, rect: Rect, y_out: float, style: Style, hinge: str, opening: Opening) -> PartGeometry:
    """A door over `rect` with its outer face at y = y_out, hinged on its left, right, bottom or top edge, its handle
    near the opposite edge; it opens by `opening` degrees."""
    x0, x1, z0, z1 = rect
    lo, hi = np.array([x0, y_out, z0]), np.array([x1, y_out + style.thickness, z1])
    width, height = x1 - x0, z1 - z0
    if hinge in ("left", "right"):
        margin = min(0.06, 0.22 * width)
        x = x1 - margin if hinge == "left" else x0 + margin
        z, length, vertical = (z0 + z1) / 2, min(0.3, 0.4 * height), True
        free_axis, at_low = 0, hinge == "left"
    elif hinge in ("bottom", "top"):
        margin = min(0.06, 0.22 * height)
        z = z1 - margin if hinge == "bottom" else z0 + margin
        x, length, vertical = (x0 + x1) / 2, min(0.35, 0.5 * width), False
        free_axis, at_low = 2, hinge == "bottom"
    else:
        raise ValueError(f"door hinge must be one of {HINGES}, got {hinge!r}")
    pieces = front_slab(lo, hi, style.handle, x, z, length, vertical)
    return PartGeometry(name, pieces, hinge_joint(lo, hi, free_axis, at_low, OUTWARD, opening.value), opening.largest)


def drawer(name: str, rect: Rect, y_out: float, style: Style, opening: Rect, back_y: float,
           rng: np.random.Generator) -> PartGeometry:
    """A drawer: its front over `rect` (outer face at y = y_out) and an open-top tray behind it, inside `opening`
    with the style's gap all round and reaching to 1.5 cm before `back_y`. It slides out (-y) by a random pull
    between MIN_PULL and MAX_PULL_FRACTION of its depth."""
    x0, x1, z0, z1 = rect
    lo, hi = np.array([x0, y_out, z0]), np.array([x1, y_out + style.thickness, z1])
    ox0, ox1, oz0, oz1 = opening
    gap = style.gap
    tray_y = y_out + style.thickness
    depth = back_y - 0.015 - tray_y
    top = oz1 - gap - min(0.02, 0.15 * (oz1 - oz0))
    if depth < 2 * MIN_PULL or top - oz0 < 0.04:
        raise ValueError(f"drawer {name}: its opening {opening} is too small for a tray of depth {depth:.3f}")
    tray = open_box([ox0 + gap, tray_y, oz0 + gap], [ox1 - gap, tray_y + depth, top], 0.012, open_axis=2,
                    open_sign=1)
    length = min(0.3, 0.45 * (x1 - x0))
    pieces = [*front_slab(lo, hi, style.handle, (x0 + x1) / 2, (z0 + z1) / 2, length, vertical=False), *tray]
    pull = draw_opening(rng, MIN_PULL, MAX_PULL_FRACTION * depth)
    joint = Joint("prismatic", np.array([(x0 + x1) / 2, y_out, (z0 + z1) / 2]), OUTWARD, 0.0, pull.value)
    return PartGeometry(name, pieces, joint, pull.largest)


def door_angle(rng: np.random.Generator, free: bool) -> Opening:
    """A random opening angle in degrees: from MIN_DOOR_DEG to FREE_DOOR_DEG for a door with nothing beside its
    hinge, else to MAX_DOOR_DEG (a door past 90 degrees sweeps in front of its neighbours)."""
    return draw_opening(rng, MIN_DOOR_DEG, FREE_DOOR_DEG if free else MAX_DOOR_DEG)


# ----------------------------------------------------------------------------------------------- front grids

@dataclass(frozen=True)
class Cell:
    """One cell of a body's front: `front` is its share of the front face (bounded by the middles of the boards
    around it, or the body's outer faces), `opening` the hole between those boards' inner faces; `outer` says which
    of its left, right, bottom and top sides is the body's outer edge."""

    front: Rect
    opening: Rect
    outer: tuple[bool, bool, bool, bool]

    def face(self, style: Style) -> Rect:
        """The rectangle a movable front of this cell covers: the cell's share shrunk by half the gap (overlay), or
        its opening shrunk by the gap (inset)."""
        if style.front == "overlay":
            x0, x1, z0, z1 = self.front
            half = style.gap / 2
            return x0 + half, x1 - half, z0 + half, z1 - half
        x0, x1, z0, z1 = self.opening
        return x0 + style.gap, x1 - style.gap, z0 + style.gap, z1 - style.gap

    def y_out(self, style: Style, front_y: float) -> float:
        """The y of a closed front's outer face for a body whose front plane is y = front_y."""
        if style.front == "overlay":
            return front_y - style.gap - style.thickness
        return front_y + style.recess


def intervals(lo: float, hi: float, weights: list[float] | np.ndarray, wall: float
              ) -> list[tuple[tuple[float, float], tuple[float, float], bool, bool]]:
    """Split lo..hi by `weights` at boards of thickness `wall` (outer walls `wall` thick inside lo..hi): per interval
    its (front share, opening, starts at lo, ends at hi)."""
    weights = np.asarray(weights, dtype=np.float64)
    cuts = lo + (hi - lo) * np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
    n = len(weights)
    out = []
    for i in range(n):
        first, last = i == 0, i == n - 1
        opening = (cuts[i] + (wall if first else wall / 2), cuts[i + 1] - (wall if last else wall / 2))
        out.append(((float(cuts[i]), float(cuts[i + 1])), (float(opening[0]), float(opening[1])), first, last))
    return out


def front_grid(width: float, z_lo: float, z_hi: float, wall: float, columns: bool, strips: list[float],
               cells: list[list[float]], depth: float) -> tuple[list[Cell], list[trimesh.Trimesh]]:
    """Cells of a carcass front (x from -width/2 to width/2, z from z_lo to z_hi) and the boards between them.

    `columns`: the front is split into vertical strips by full-height boards, each strip into cells stacked by
    boards across it (else horizontal strips split side by side). `strips` weights the strips, `cells[i]` the cells
    of strip i. Boards run from the front plane (y = -depth/2) to the back wall. Cells are in strip order.
    """
    front_y, back_y = -depth / 2, depth / 2 - wall
    out_cells, boards = [], []
    major = (-width / 2, width / 2) if columns else (z_lo, z_hi)
    minor = (z_lo, z_hi) if columns else (-width / 2, width / 2)
    strip_spans = intervals(*major, strips, wall)
    for (s_front, s_open, s_first, s_last), weights in zip(strip_spans, cells):
        if not s_last:
            b = s_front[1]
            lo_m, hi_m = minor[0] + wall, minor[1] - wall
            boards.append(_board(columns, b - wall / 2, b + wall / 2, lo_m, hi_m, front_y, back_y))
        for c_front, c_open, c_first, c_last in intervals(*minor, weights, wall):
            if not c_last:
                b = c_front[1]
                boards.append(_board(not columns, b - wall / 2, b + wall / 2, s_open[0], s_open[1], front_y, back_y))
            if columns:
                cell = Cell((*s_front, *c_front), (*s_open, *c_open), (s_first, s_last, c_first, c_last))
            else:
                cell = Cell((*c_front, *s_front), (*c_open, *s_open), (c_first, c_last, s_first, s_last))
            out_cells.append(cell)
    return out_cells, boards


def _board(vertical: bool, a: float, b: float, lo: float, hi: float, front_y: float, back_y: float) -> trimesh.Trimesh:
    """A board from the front plane to the back wall: vertical (x from a to b, z from lo to hi) or horizontal."""
    if vertical:
        return box([a, front_y, lo], [b, back_y, hi])
    return box([lo, front_y, a], [hi, back_y, b])


def carcass(width: float, depth: float, z_lo: float, z_hi: float, wall: float) -> list[trimesh.Trimesh]:
    """Hollow body from z_lo to z_hi, centred on x and y, open at the front (-y)."""
    return open_box([-width / 2, -depth / 2, z_lo], [width / 2, depth / 2, z_hi], wall, open_axis=1, open_sign=-1)


def shelves_in(opening: Rect, count: int, front_y: float, back_y: float, wall: float,
               setback: float) -> list[trimesh.Trimesh]:
    """`count` evenly spaced boards across an opening, set back `setback` from the front plane y = front_y."""
    x0, x1, z0, z1 = opening
    heights = z0 + (z1 - z0) * (np.arange(count) + 1) / (count + 1)
    return [box([x0, front_y + setback, z - wall / 2], [x1, back_y, z + wall / 2]) for z in heights]


def static_panel(cell: Cell, style: Style, front_y: float) -> tuple[list[trimesh.Trimesh], float]:
    """A fixed front panel filling a cell like the movable fronts beside it; returns it and its outer face's y."""
    x0, x1, z0, z1 = cell.face(style) if style.front == "overlay" else cell.opening
    if style.front == "overlay":
        y_out = front_y - style.gap - style.thickness
        return [box([x0, y_out, z0], [x1, front_y, z1])], y_out
    y_out = front_y + style.recess
    return [box([x0, y_out, z0], [x1, y_out + style.thickness, z1])], y_out


def cell_front(name: str, kind: str, cell: Cell, style: Style, front_y: float, back_y: float,
               rng: np.random.Generator) -> PartGeometry:
    """The door ("door_left", "door_right", "door_bottom", "door_top" by hinge) or "drawer" of a cell."""
    rect, y_out = cell.face(style), cell.y_out(style, front_y)
    if kind == "drawer":
        return drawer(name, rect, y_out, style, cell.opening, back_y, rng)
    hinge = kind.removeprefix("door_")
    free = (hinge == "left" and cell.outer[0]) or (hinge == "right" and cell.outer[1])
    return door(name, rect, y_out, style, hinge, door_angle(rng, free))


def with_thickness(style: Style, thickness: float) -> Style:
    """`style` with another front thickness (appliance doors are thicker than furniture fronts)."""
    return dataclasses.replace(style, thickness=thickness)
