"""Procedural articulated objects: furniture, appliances, a chest, a window and a laptop, each drawn from a seed.

Builders (BUILDERS) return part geometry at joint value 0 (closed) in the raw frame of `data_tools.shapes` plus each
joint's opening; `build_object` colours the parts, picks which state is open, turns the object into a random
orientation, draws its lighting and normalises it into a sphere around the origin.

Defaults are realistic on purpose, so that no stage of the pipeline gets the part boundaries for free: the movable
parts are made of the body's material (`appearance="material"`), the object stands in a random orientation
(`orientation="random"`: any yaw, tilted by up to MAX_TILT_DEG) and each object has its own light
(`lighting="random"`). `appearance="distinct"` (a hue per part, spread around the colour wheel),
`orientation="upright"` (front towards -y, z up) and `lighting="fixed"` give the easy variant. Motions span each
joint's full range, small openings included (`motion="full"`); `motion="large"` keeps them in its upper half.
"""
from __future__ import annotations

import dataclasses
import math
import zlib
from typing import Callable

import numpy as np
import trimesh

from data_tools.articulated import STATE_NAMES, Joint, ObjectSpec, Part, normalise, similarity
from data_tools.lighting import DEFAULT_LIGHTING, LIGHTINGS, make_lighting
from data_tools.shapes import (GAP_RANGE, MIN_DOOR_DEG, MIN_PULL, Cell, PartGeometry, Style, box, carcass,
                               cell_front, cylinder, door_angle, draw_opening, drawer, front_grid, handle_pieces,
                               hinge_joint, merge, open_box, random_style, shelves_in, slab_with_holes, static_panel,
                               with_thickness)
from data_tools.textures import Texture, material_variant, random_material, random_texture

OBJECT_RADIUS = 0.9  # both states fit a sphere of this radius around the origin
APPEARANCES = ("material", "distinct")
ORIENTATIONS = ("random", "upright")
MOTIONS = ("full", "large")
DEFAULT_APPEARANCE, DEFAULT_ORIENTATION, DEFAULT_MOTION = "material", "random", "full"
MAX_TILT_DEG = 15.0  # of a randomly oriented object's up axis from the vertical
SHELF_SPACING = 0.35  # a door's compartment gets one shelf per this much height (at most two)

# Independent random streams of one seed: geometry ([seed, 0]), and appearance, orientation and lighting, which also
# depend on the category so that objects of one seed do not all share a material, pose and light (the cameras of
# data_tools.synthetic use [seed, 1..4]).
GEOMETRY_STREAM, APPEARANCE_STREAM, ORIENTATION_STREAM, LIGHTING_STREAM = 0, 10, 11, 12


# ----------------------------------------------------------------------------------------------- shared bodies

def furniture_body(rng: np.random.Generator, width: float, depth: float, front_height: float,
                   wall: float) -> tuple[list[trimesh.Trimesh], float, float]:
    """A carcass whose front is `front_height` tall, on a set-back plinth or not, under an overhanging top board or
    not; returns its solids and the z range of the carcass."""
    plinth = float(rng.uniform(0.05, 0.1)) if rng.uniform() < 0.4 else 0.0
    top = float(rng.uniform(0.02, 0.035)) if rng.uniform() < 0.5 else 0.0
    z_lo, z_hi = plinth, plinth + front_height
    pieces = carcass(width, depth, z_lo, z_hi, wall)
    if plinth:
        pieces.append(box([-width / 2 + 0.03, -depth / 2 + 0.05, 0.0], [width / 2 - 0.03, depth / 2 - 0.03, plinth]))
    if top:
        overhang = float(rng.uniform(0.01, 0.03))
        pieces.append(box([-width / 2 - overhang, -depth / 2 - overhang, z_hi],
                          [width / 2 + overhang, depth / 2, z_hi + top]))
    return pieces, z_lo, z_hi


def grid_parts(rng: np.random.Generator, cells: list[Cell], kinds: list[str], style: Style, depth: float,
               wall: float, shelves: int | None = None
               ) -> tuple[list[trimesh.Trimesh], list[PartGeometry], list[tuple[Cell, float]]]:
    """The fronts of a body's cells: kinds "drawer", "door_<hinge>" or "panel" (a fixed front).

    Returns the static solids (fixed panels, shelves behind doors: `shelves` each, or one per SHELF_SPACING of
    height up to two), the movable parts (doors and drawers numbered in cell order) and each fixed panel's cell
    with the y of its outer face (for knobs and buttons).
    """
    front_y, back_y = -depth / 2, depth / 2 - wall
    static, movable, panels = [], [], []
    counters = {"door": 0, "drawer": 0}
    for cell, kind in zip(cells, kinds, strict=True):
        if kind == "panel":
            pieces, y_out = static_panel(cell, style, front_y)
            static += pieces
            panels.append((cell, y_out))
            continue
        base = "drawer" if kind == "drawer" else "door"
        movable.append(cell_front(f"{base}_{counters[base]}", kind, cell, style, front_y, back_y, rng))
        counters[base] += 1
        if base == "door":
            height = cell.opening[3] - cell.opening[2]
            count = shelves if shelves is not None else min(2, int(height / SHELF_SPACING))
            static += shelves_in(cell.opening, count, front_y, back_y, wall, style.front_depth() + 0.025)
    return static, movable, panels


def panel_knobs(cell: Cell, y_out: float, count: int, radius: float) -> list[trimesh.Trimesh]:
    """`count` knobs in a row across a fixed panel (outer face at y = y_out), sticking out towards -y."""
    x0, x1, z0, z1 = cell.opening
    z = (z0 + z1) / 2
    xs = x0 + (x1 - x0) * (np.arange(count) + 0.5) / count
    return [cylinder([x, y_out - 0.0125, z], radius, 0.025, axis=1) for x in xs]


def body_part(pieces: list[trimesh.Trimesh], name: str = "body") -> PartGeometry:
    return PartGeometry(name, pieces, None)


def weights(rng: np.random.Generator, count: int, spread: float = 0.3) -> list[float]:
    """`count` random relative sizes within 1 +- `spread`."""
    return [float(w) for w in rng.uniform(1.0 - spread, 1.0 + spread, count)]


# ----------------------------------------------------------------------------------------------- furniture

def _cabinet(rng: np.random.Generator) -> list[PartGeometry]:
    """One-door cabinet with shelves inside, the door hinged on its left or right edge."""
    width, depth, height = rng.uniform(0.5, 0.8), rng.uniform(0.4, 0.6), rng.uniform(0.8, 1.3)
    wall, style = rng.uniform(0.02, 0.035), random_style(rng)
    body, z_lo, z_hi = furniture_body(rng, width, depth, height, wall)
    cells, boards = front_grid(width, z_lo, z_hi, wall, True, [1.0], [[1.0]], depth)
    hinge = str(rng.choice(["left", "right"]))
    static, movable, _ = grid_parts(rng, cells, [f"door_{hinge}"], style, depth, wall, int(rng.integers(1, 3)))
    return [body_part(body + boards + static), *movable]


def _drawers(rng: np.random.Generator) -> list[PartGeometry]:
    """Chest of 2-4 stacked drawers, the lower ones as tall as the upper ones or taller."""
    count = int(rng.integers(2, 5))
    width, depth = rng.uniform(0.6, 0.9), rng.uniform(0.4, 0.55)
    height = count * rng.uniform(0.18, 0.28)
    wall, style = rng.uniform(0.02, 0.03), random_style(rng)
    body, z_lo, z_hi = furniture_body(rng, width, depth, height, wall)
    sizes = sorted(weights(rng, count, 0.2), reverse=True)
    cells, boards = front_grid(width, z_lo, z_hi, wall, True, [1.0], [sizes], depth)
    static, movable, _ = grid_parts(rng, cells, ["drawer"] * count, style, depth, wall)
    return [body_part(body + boards + static), *movable]


def _storage(rng: np.random.Generator) -> list[PartGeometry]:
    """Storage unit: two drawers side by side on top, a double door below (hinged on the outer sides)."""
    width, depth, height = rng.uniform(0.9, 1.2), rng.uniform(0.4, 0.55), rng.uniform(0.9, 1.2)
    wall, style = rng.uniform(0.02, 0.03), random_style(rng)
    body, z_lo, z_hi = furniture_body(rng, width, depth, height, wall)
    top = float(rng.uniform(0.25, 0.35))
    rows = [1.0 - top, top]
    cells, boards = front_grid(width, z_lo, z_hi, wall, True, weights(rng, 2, 0.1), [rows, rows], depth)
    kinds = ["door_left", "drawer", "door_right", "drawer"]
    static, movable, _ = grid_parts(rng, cells, kinds, style, depth, wall, shelves=1)
    return [body_part(body + boards + static), *movable]


def _mixed(rng: np.random.Generator) -> list[PartGeometry]:
    """Cabinet with 2-6 doors and drawers in a random grid: columns split into stacked cells, or rows split into
    cells side by side. Drawers go mostly into low cells; doors hinge on any side that suits the cell's shape."""
    n_parts = int(rng.integers(2, 7))
    columns = bool(rng.uniform() < 0.5)
    n_strips = int(rng.integers(max(1, math.ceil(n_parts / 3)), min(3, n_parts) + 1))
    counts = [1] * n_strips
    for _ in range(n_parts - n_strips):
        open_strips = [i for i, c in enumerate(counts) if c < 3]
        counts[int(rng.choice(open_strips))] += 1
    most = max(counts)
    depth, wall, style = rng.uniform(0.4, 0.6), rng.uniform(0.018, 0.03), random_style(rng)
    if columns:
        strip_sizes = [float(s) for s in rng.uniform(0.3, 0.55, n_strips)]
        width, height = sum(strip_sizes), rng.uniform(max(0.5, 0.25 * most), max(0.9, 0.45 * most))
    else:
        strip_sizes = [float(s) for s in rng.uniform(0.18, 0.5, n_strips)]
        width, height = rng.uniform(max(0.5, 0.3 * most), max(0.9, 0.5 * most)), sum(strip_sizes)
    body, z_lo, z_hi = furniture_body(rng, width, depth, height, wall)
    cells, boards = front_grid(width, z_lo, z_hi, wall, columns, strip_sizes, [weights(rng, c) for c in counts],
                               depth)
    kinds = [cell_kind(rng, cell) for cell in cells]
    static, movable, _ = grid_parts(rng, cells, kinds, style, depth, wall)
    return [body_part(body + boards + static), *movable]


def cell_kind(rng: np.random.Generator, cell: Cell) -> str:
    """A drawer (likely in low cells) or a door whose hinge suits the cell: side hinges for tall cells, a flap
    (bottom or top hinge) or side hinges for wide ones."""
    x0, x1, z0, z1 = cell.opening
    width, height = x1 - x0, z1 - z0
    p_drawer = 0.8 if height < 0.3 else (0.35 if height < 0.55 else 0.1)
    if rng.uniform() < p_drawer:
        return "drawer"
    hinges = ["left", "right"] if height >= width else ["left", "right", "bottom", "top"]
    if height < 0.3 and width > 1.5 * height:
        hinges = ["bottom", "top"]
    return f"door_{rng.choice(hinges)}"


# ----------------------------------------------------------------------------------------------- appliances

def _fridge(rng: np.random.Generator) -> list[PartGeometry]:
    """Fridge with two thick doors hinged on opposite outer sides: side by side, or stacked (freezer below)."""
    width, depth, height = rng.uniform(0.7, 0.9), rng.uniform(0.6, 0.75), rng.uniform(1.5, 1.9)
    wall = rng.uniform(0.03, 0.045)
    style = with_thickness(random_style(rng, handles=("bar", "grip")), rng.uniform(0.04, 0.06))
    body = carcass(width, depth, 0.0, height, wall)
    upper = str(rng.choice(["left", "right"]))
    lower = "right" if upper == "left" else "left"
    if rng.uniform() < 0.5:
        cells, boards = front_grid(width, 0.0, height, wall, True, weights(rng, 2, 0.1), [[1.0], [1.0]], depth)
        kinds = ["door_left", "door_right"]
    else:
        bottom = float(rng.uniform(0.3, 0.4))
        cells, boards = front_grid(width, 0.0, height, wall, False, [bottom, 1.0 - bottom], [[1.0], [1.0]], depth)
        kinds = [f"door_{lower}", f"door_{upper}"]
    static, movable, _ = grid_parts(rng, cells, kinds, style, depth, wall)
    return [body_part(body + boards + static), *movable]


def _oven(rng: np.random.Generator) -> list[PartGeometry]:
    """Oven: hollow body with a rack, a knob panel on top and a door hinged along its bottom edge."""
    width, depth, height = rng.uniform(0.6, 0.8), rng.uniform(0.55, 0.7), rng.uniform(0.6, 0.85)
    wall = rng.uniform(0.03, 0.04)
    style = with_thickness(random_style(rng, handles=("bar", "grip")), rng.uniform(0.04, 0.06))
    body = carcass(width, depth, 0.0, height, wall)
    panel = float(rng.uniform(0.15, 0.22))
    cells, boards = front_grid(width, 0.0, height, wall, False, [1.0 - panel, panel], [[1.0], [1.0]], depth)
    static, movable, panels = grid_parts(rng, cells, ["door_bottom", "panel"], style, depth, wall, shelves=1)
    (cell, y_out), = panels
    knobs = panel_knobs(cell, y_out, int(rng.integers(3, 6)), float(rng.uniform(0.018, 0.025)))
    return [body_part(body + boards + static + knobs), *movable]


def _microwave(rng: np.random.Generator) -> list[PartGeometry]:
    """Microwave on four feet: a door hinged on its left side and a fixed control panel with buttons and a knob
    beside it."""
    width, depth, height = rng.uniform(0.45, 0.6), rng.uniform(0.33, 0.45), rng.uniform(0.26, 0.36)
    wall, feet = rng.uniform(0.015, 0.025), rng.uniform(0.01, 0.02)
    style = with_thickness(random_style(rng, handles=("bar", "grip")), rng.uniform(0.025, 0.04))
    body = carcass(width, depth, feet, feet + height, wall)
    body += [box([sx * (width / 2 - 0.05) - 0.02, sy * (depth / 2 - 0.05) - 0.02, 0.0],
                 [sx * (width / 2 - 0.05) + 0.02, sy * (depth / 2 - 0.05) + 0.02, feet])
             for sx in (-1, 1) for sy in (-1, 1)]
    door_share = float(rng.uniform(0.68, 0.76))
    cells, boards = front_grid(width, feet, feet + height, wall, True, [door_share, 1.0 - door_share], [[1.0], [1.0]],
                               depth)
    static, movable, panels = grid_parts(rng, cells, ["door_left", "panel"], style, depth, wall, shelves=0)
    (cell, y_out), = panels
    x0, x1, z0, z1 = cell.opening
    buttons = [box([x - 0.012, y_out - 0.006, z - 0.008], [x + 0.012, y_out, z + 0.008])
               for z in np.linspace(z0 + 0.35 * (z1 - z0), z1 - 0.1 * (z1 - z0), 4)
               for x in (x0 + 0.3 * (x1 - x0), x0 + 0.7 * (x1 - x0))]
    knob = cylinder([(x0 + x1) / 2, y_out - 0.0125, z0 + 0.18 * (z1 - z0)], min(0.025, 0.3 * (x1 - x0)), 0.025, 1)
    return [body_part(body + boards + static + buttons + [knob]), *movable]


def _washer(rng: np.random.Generator) -> list[PartGeometry]:
    """Front-loading washing machine: a round door on a vertical hinge over the drum's opening, and a detergent
    drawer in the control strip at the top, beside a fixed panel with a knob and buttons."""
    width, depth, height = rng.uniform(0.55, 0.65), rng.uniform(0.5, 0.62), rng.uniform(0.8, 0.9)
    wall, panel_t = rng.uniform(0.015, 0.025), rng.uniform(0.015, 0.025)
    style = with_thickness(random_style(rng, handles=("bar", "grip")), rng.uniform(0.015, 0.02))
    style = dataclasses.replace(style, front="inset", recess=min(style.recess, 0.003))
    front_y, back_y = -depth / 2, depth / 2 - wall
    inner = (-width / 2 + wall, width / 2 - wall)
    strip_lo = height - wall - rng.uniform(0.12, 0.16)
    margin = 0.02
    drawer_hole = (inner[0] + margin, inner[0] + margin + rng.uniform(0.3, 0.4) * width, strip_lo + margin,
                   height - wall - margin)
    # The door: a disc of radius R over a square hole of half-size 0.62 R (hidden behind it), above a kick plate.
    radius = min(rng.uniform(0.19, 0.25), width / 2 - 0.05, (strip_lo - wall - 0.12) / 2 - 0.02)
    centre_x = rng.uniform(-0.02, 0.02)
    centre_z = 0.1 + radius + rng.uniform(0.0, 1.0) * (strip_lo - wall - 0.04 - 0.1 - 2 * radius)
    half = 0.62 * radius
    door_hole = (centre_x - half, centre_x + half, centre_z - half, centre_z + half)
    drum_wall = 0.01
    body = carcass(width, depth, 0.0, height, wall)
    body += slab_with_holes((*inner, wall, height - wall), front_y, front_y + panel_t, [drawer_hole, door_hole])
    body.append(box([inner[0], front_y + panel_t, strip_lo - wall], [inner[1], back_y, strip_lo]))
    body += open_box([door_hole[0] - drum_wall, front_y + panel_t, door_hole[2] - drum_wall],
                     [door_hole[1] + drum_wall, back_y - 0.01, door_hole[3] + drum_wall], drum_wall, 1, -1)
    strip_z = (strip_lo + height - wall) / 2
    controls_x0 = drawer_hole[1] + 0.04
    body.append(cylinder([inner[1] - 0.07, front_y - 0.0125, strip_z], 0.03, 0.025, axis=1))
    body += [box([x - 0.012, front_y - 0.006, strip_z - 0.008], [x + 0.012, front_y, strip_z + 0.008])
             for x in np.linspace(controls_x0, inner[1] - 0.13, int(rng.integers(2, 5)))]
    detergent = drawer("drawer_0", (drawer_hole[0] + style.gap, drawer_hole[1] - style.gap,
                                    drawer_hole[2] + style.gap, drawer_hole[3] - style.gap),
                       front_y + style.recess, style, drawer_hole,
                       front_y + style.recess + style.thickness + rng.uniform(0.25, 0.35), rng)
    gap, door_t = style.gap, float(rng.uniform(0.04, 0.06))
    y_out = front_y - gap - door_t
    lo = np.array([centre_x - radius, y_out, centre_z - radius])
    hi = np.array([centre_x + radius, y_out + door_t, centre_z + radius])
    door_pieces = [
        cylinder([centre_x, y_out + door_t / 2, centre_z], radius, door_t, axis=1),
        cylinder([centre_x, y_out - 0.0075, centre_z], 0.72 * radius, 0.015, axis=1),
        box([centre_x + 0.76 * radius, y_out - 0.02, centre_z - 0.05],
            [centre_x + 0.9 * radius, y_out, centre_z + 0.05]),
    ]
    angle = door_angle(rng, free=True)
    joint = hinge_joint(lo, hi, free_axis=0, hinge_at_low=True, outward=np.array([0.0, -1.0, 0.0]),
                        opened=angle.value)
    return [body_part(body), PartGeometry("door_0", door_pieces, joint, angle.largest), detergent]


# ----------------------------------------------------------------------------------------------- others

def _box(rng: np.random.Generator) -> list[PartGeometry]:
    """Chest: an open-top box (with side handles or not) and a lid hinged along its back edge."""
    width, depth, height = rng.uniform(0.5, 0.9), rng.uniform(0.35, 0.6), rng.uniform(0.25, 0.5)
    wall, gap = rng.uniform(0.015, 0.03), rng.uniform(*GAP_RANGE)
    handle = str(rng.choice(["bar", "knob"]))
    body = open_box([-width / 2, -depth / 2, 0.0], [width / 2, depth / 2, height], wall, open_axis=2, open_sign=1)
    if rng.uniform() < 0.5:
        for side in (-1.0, 1.0):
            # A bar on the front face, turned a quarter about z onto the side face x = side * width / 2.
            turn = trimesh.transformations.rotation_matrix(side * np.pi / 2, [0.0, 0.0, 1.0])
            for piece in handle_pieces("bar", 0.0, 0.7 * height, 0.0, min(0.2, 0.5 * depth), vertical=False):
                piece.apply_transform(turn)
                piece.apply_translation([side * width / 2, 0.0, 0.0])
                body.append(piece)
    thickness, overhang = rng.uniform(0.015, 0.03), rng.uniform(0.0, 0.015)
    lo = np.array([-width / 2 - overhang, -depth / 2 - overhang, height + gap])
    hi = np.array([width / 2 + overhang, depth / 2 + overhang, height + gap + thickness])
    lid = [box(lo, hi), *handle_pieces(handle, 0.0, (lo[2] + hi[2]) / 2, float(lo[1]), min(0.2, 0.3 * width),
                                       vertical=False)]
    angle = draw_opening(rng, MIN_DOOR_DEG, 110.0)
    joint = hinge_joint(lo, hi, free_axis=1, hinge_at_low=False, outward=np.array([0.0, 0.0, 1.0]),
                        opened=angle.value)
    return [body_part(body), PartGeometry("lid", lid, joint, angle.largest)]


def _window(rng: np.random.Generator) -> list[PartGeometry]:
    """Window: a deep frame with tracks, and two sashes (panes in frames) in two planes, sliding past each other
    sideways or up and down; one or both of them move."""
    width, height = rng.uniform(0.6, 1.2), rng.uniform(0.6, 1.3)
    depth, bar = rng.uniform(0.1, 0.14), rng.uniform(0.04, 0.07)
    gap, pane_t, stile = rng.uniform(*GAP_RANGE), rng.uniform(0.02, 0.03), rng.uniform(0.03, 0.05)
    handle = str(rng.choice(["bar", "knob"]))
    horizontal = bool(rng.uniform() < 0.5)
    frame = [box([-width / 2, -depth / 2, 0.0], [-width / 2 + bar, depth / 2, height]),
             box([width / 2 - bar, -depth / 2, 0.0], [width / 2, depth / 2, height]),
             box([-width / 2 + bar, -depth / 2, 0.0], [width / 2 - bar, depth / 2, bar]),
             box([-width / 2 + bar, -depth / 2, height - bar], [width / 2 - bar, depth / 2, height])]
    ox0, ox1, oz0, oz1 = -width / 2 + bar, width / 2 - bar, bar, height - bar
    planes = [(-gap / 2 - pane_t, -gap / 2), (gap / 2, gap / 2 + pane_t)]  # front and back sash
    # Tracks: strips along the sliding direction just outside the two sash planes, overlapping the sashes' edges.
    for y0, y1 in ((planes[0][0] - gap - 0.01, planes[0][0] - gap), (planes[1][1] + gap, planes[1][1] + gap + 0.01)):
        if horizontal:
            frame += [box([ox0, y0, oz0], [ox1, y1, oz0 + 0.015]), box([ox0, y0, oz1 - 0.015], [ox1, y1, oz1])]
        else:
            frame += [box([ox0, y0, oz0], [ox0 + 0.015, y1, oz1]), box([ox1 - 0.015, y0, oz0], [ox1, y1, oz1])]
    overlap = rng.uniform(0.03, 0.06)
    axis = 0 if horizontal else 2
    lo_o, hi_o = (ox0, ox1) if horizontal else (oz0, oz1)
    size = (hi_o - lo_o - 2 * gap + overlap) / 2
    travel = hi_o - lo_o - 2 * gap - size
    spans = [(lo_o + gap, lo_o + gap + size), (hi_o - gap - size, hi_o - gap)]  # front sash low, back sash high
    moving = [0, 1] if rng.uniform() < 0.5 else [int(rng.integers(0, 2))]
    parts, static = [], []
    for k, ((y0, y1), (a, b)) in enumerate(zip(planes, spans)):
        rect = (a, b, oz0 + gap, oz1 - gap) if horizontal else (ox0 + gap, ox1 - gap, a, b)
        pieces = sash(rect, y0, y1, stile)
        meeting = b - stile / 2 if k == 0 else a + stile / 2  # the sashes' overlapping edges
        hx, hz = (meeting, (rect[2] + rect[3]) / 2) if horizontal else ((rect[0] + rect[1]) / 2, meeting)
        handle_parts = handle_pieces(handle, hx, hz, y0, 0.1, vertical=horizontal)
        if k == 1:  # the back sash's handle is on its back face: turn it half a turn about z
            turn = trimesh.transformations.rotation_matrix(np.pi, [0.0, 0.0, 1.0], [hx, (y0 + y1) / 2, hz])
            for piece in handle_parts:
                piece.apply_transform(turn)
        pieces += handle_parts
        if k not in moving:
            static += pieces
            continue
        direction = np.eye(3)[axis] * (1.0 if k == 0 else -1.0)
        shift = draw_opening(rng, MIN_PULL, 0.95 * travel)
        joint = Joint("prismatic", np.array([(rect[0] + rect[1]) / 2, y0, (rect[2] + rect[3]) / 2]), direction,
                      0.0, shift.value)
        parts.append(PartGeometry(f"sash_{len(parts)}", pieces, joint, shift.largest))
    return [body_part(frame + static, "frame"), *parts]


def sash(rect: tuple[float, float, float, float], y0: float, y1: float, stile: float) -> list[trimesh.Trimesh]:
    """A sash over `rect` between y0 and y1: four frame bars `stile` wide around a 6 mm pane."""
    x0, x1, z0, z1 = rect
    mid = (y0 + y1) / 2
    return [box([x0, y0, z0], [x0 + stile, y1, z1]), box([x1 - stile, y0, z0], [x1, y1, z1]),
            box([x0 + stile, y0, z0], [x1 - stile, y1, z0 + stile]),
            box([x0 + stile, y0, z1 - stile], [x1 - stile, y1, z1]),
            box([x0 + stile - 0.005, mid - 0.003, z0 + stile - 0.005], [x1 - stile + 0.005, mid + 0.003,
                                                                        z1 - stile + 0.005])]


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
    angle = draw_opening(rng, MIN_DOOR_DEG, 120.0)
    joint = hinge_joint(lid_lo, lid_hi, free_axis=1, hinge_at_low=False, outward=np.array([0.0, 0.0, 1.0]),
                        opened=angle.value)
    return [body_part(base, "base"), PartGeometry("lid", [box(lid_lo, lid_hi), screen], joint, angle.largest)]


BUILDERS: dict[str, Callable[[np.random.Generator], list[PartGeometry]]] = {
    "cabinet": _cabinet,
    "drawers": _drawers,
    "fridge": _fridge,
    "storage": _storage,
    "laptop": _laptop,
    "oven": _oven,
    "box": _box,
    "microwave": _microwave,
    "washer": _washer,
    "window": _window,
    "mixed": _mixed,
}


def categories() -> list[str]:
    """Names of the object categories the generator can build (the CLI's `--category` values)."""
    return list(BUILDERS)


# ----------------------------------------------------------------------------------------------- the object

def part_textures(appearance: str, count: int, rng: np.random.Generator) -> list[Texture]:
    """Textures of the body and `count - 1` movable parts: variants of one material, or hues spread around the
    colour wheel."""
    if appearance == "material":
        material = random_material(rng)
        return [material] + [material_variant(material, rng) for _ in range(count - 1)]
    hues = rng.uniform() + np.arange(count) / count + rng.uniform(-0.03, 0.03, count)
    return [random_texture(rng, hue) for hue in hues]


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """(3, 3) rotation: a tilt of up to MAX_TILT_DEG about a random horizontal axis, then a uniform yaw about z."""
    tilt_axis = rng.uniform(0.0, 2.0 * np.pi)
    tilt = np.radians(rng.uniform(0.0, MAX_TILT_DEG))
    yaw = rng.uniform(0.0, 2.0 * np.pi)
    tilt_matrix = trimesh.transformations.rotation_matrix(tilt, [np.cos(tilt_axis), np.sin(tilt_axis), 0.0])
    yaw_matrix = trimesh.transformations.rotation_matrix(yaw, [0.0, 0.0, 1.0])
    return (yaw_matrix @ tilt_matrix)[:3, :3]


def check_options(category: str, seed: int, open_state: str, appearance: str, orientation: str, lighting: str,
                  motion: str) -> None:
    """Raise ValueError naming the first option `build_object` cannot use."""
    if category not in BUILDERS:
        raise ValueError(f"unknown category {category!r}; choose one of {categories()}")
    if open_state not in STATE_NAMES:
        raise ValueError(f"open_state must be one of {STATE_NAMES}, got {open_state!r}")
    if int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    for name, value, choices in (("appearance", appearance, APPEARANCES), ("orientation", orientation, ORIENTATIONS),
                                 ("lighting", lighting, LIGHTINGS), ("motion", motion, MOTIONS)):
        if value not in choices:
            raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def build_object(category: str, seed: int, open_state: str = "end", *, appearance: str = DEFAULT_APPEARANCE,
                 orientation: str = DEFAULT_ORIENTATION, lighting: str = DEFAULT_LIGHTING,
                 motion: str = DEFAULT_MOTION) -> ObjectSpec:
    """The object of `category` drawn from `seed`, open in `open_state` ("start" or "end") and closed in the other.

    Deterministic by seed. Geometry, appearance, orientation and lighting come from independent random streams, so
    the options change only what they name: `appearance` "material" (movable parts in the body's material) or
    "distinct" (a hue per part), `orientation` "random" (yaw and tilt) or "upright", `lighting` "random" or "fixed",
    `motion` "full" (openings anywhere in each joint's range) or "large" (halfway from there to the range's top).
    """
    check_options(category, seed, open_state, appearance, orientation, lighting, motion)
    seed = int(seed)
    geometries = BUILDERS[category](np.random.default_rng([seed, GEOMETRY_STREAM]))

    def stream(index: int) -> np.random.Generator:
        return np.random.default_rng([seed, index, zlib.crc32(category.encode())])

    textures = part_textures(appearance, len(geometries), stream(APPEARANCE_STREAM))
    parts = [
        Part(geom.name, merge(geom.pieces), texture, _with_open_state(_with_motion(geom, motion), open_state),
             pieces=tuple(len(piece.vertices) for piece in geom.pieces))
        for geom, texture in zip(geometries, textures)
    ]
    spec = ObjectSpec(category, seed, parts, make_lighting(lighting, stream(LIGHTING_STREAM)))
    if orientation == "random":
        spec = similarity(spec, random_rotation(stream(ORIENTATION_STREAM)), 1.0, np.zeros(3))
    return normalise(spec, OBJECT_RADIUS)


def _with_motion(geom: PartGeometry, motion: str) -> Joint | None:
    """The part's joint; with motion "large" its opening moves halfway towards the largest its builder draws."""
    if geom.joint is None or motion == "full":
        return geom.joint
    return dataclasses.replace(geom.joint, end=(geom.joint.end + geom.largest) / 2)


def _with_open_state(joint: Joint | None, open_state: str) -> Joint | None:
    """Builders make joints that open from start to end; swap the two values when the start state is the open one."""
    if joint is None or open_state == "end":
        return joint
    return dataclasses.replace(joint, start=joint.end, end=joint.start)
