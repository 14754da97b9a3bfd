"""Stage 3's part discovery on point arrays: movable parts of the canonical state and their motions to the other.

Steps (DESIGN.md §5 stage 3): voxelise the opaque Gaussian centres of the canonical state c and the other state o
on one grid; static = voxels occupied in both, dilated; dynamic = the rest; 26-connected components of c's dynamic
voxels, largest first, are the candidates; each is matched to the other state by rigid motions c -> o
(`PartMatcher`, `segment_by_motion`).

Selection rule (robust to surfaces seen in one state only and to parts that touch):
  1. *Occluded static* voxels are dropped first: those that lie inside the other state's shell where they are
     (`PartMatcher.occluded`). Coarse Gaussians cover only visible surfaces, so when a door opens the cabinet's
     inside appears as a large dynamic component with no rigid counterpart; it is simply hidden in the other state.
  2. Each remaining connected piece is explained by as few rigid motions as possible (`segment_by_motion`: parts
     that touch, like a door swung under a pulled-out drawer, form one component); every resulting part needs a
     *convincing rigid match*: overlap ratio (`PartMatcher.overlap`) >= `min_overlap` after its motion.
  3. The parts of all components are ranked by size. A part that moves like a larger accepted part (within
     `attach_tolerance` voxels on average) and is less than half its size is that part cut in two by the static
     dilation (a drawer's back wall) and is attached to it. The first K - 1 are kept; with an automatic count, those
     of at least `auto_min_relative_size` of the largest. With K requested, parts under `SCRAP_FRACTION` of the
     largest do not count; with too few convincing parts, rejected pieces fill the slots (`fill_weak`) and are
     flagged `weak`, and scraps only fill what is still missing.
     Parts that touch on the grid and move alike within about 1.5 voxels (stacked drawers pulled out by nearly the
     same amount) cannot be told apart by the landing test, so each connected piece is first cut where its points
     separate at half the voxel size (`fine_pieces`), every cut piece is segmented on its own, and parts whose
     motions agree within `fine_split_shift` voxels are joined again (`merge_alike`: pieces of one rigid part).
  4. When K is given and fewer convincing parts were found (such parts also touch at half the voxel size: a coarse
     model's surface bridges 1 cm gaps), the accepted parts, largest first, are split by the motions of their
     spatial chunks (`split_by_local_motions`; parts that slide only, their sub-parts translating along the part's
     direction) before weak fall-backs are used, and the K largest parts kept. Only the missing count triggers it,
     so a scene whose parts are all found is unchanged.
  5. With two or more parts of given joint types, the global fit of one motion per type over all considered voxels
     (`utils/multi_motion.py`) replaces these parts when it explains the scene at a lower cost (`global_fit`): parts
     that touch mislead the one-motion-at-a-time path (the storage unit's doors and drawers, open, are one component).
     Its prismatic motions are kept as fitted (`PartEstimate.fitted`): refitting by ICP drifts.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from scene.articulation import joint_to_matrix, matrix_to_joint
from utils.motion_estimation import guess_joint_type
from utils.multi_motion import SceneCost, fit_motions
from utils.part_matching import Match, PartMatcher, StateVoxels
from utils.motion_segmentation import (SLIDING_DEGREES, fine_pieces, merge_alike, segment_by_motion,
                                      slide_direction, split_by_local_motions)
from utils.rigid_fit import apply_transform, rotation_about_line, rotation_angle
from utils.sliding_parts import complete_sliding_parts
from utils.voxel_grid import VoxelGrid, connected_components, split_static_dynamic

METHODS = ("refined", "plane")
AXIS_REACH = 8  # voxels: how far `place_axis` moves a revolute axis across itself
AXIS_MIN_GAIN = 0.05  # overlap by which a moved axis must beat the ICP one (near 1, gains are voxel noise)
JOINT_TYPES = ("revolute", "prismatic")
SCRAP_FRACTION = 0.02  # parts smaller than this fraction of the largest do not count towards a requested number
SLIDE_MARGIN = 0.15  # overlap within which a translation explaining a part makes `split_parts` treat it as sliding


@dataclass(frozen=True)
class VoxelizeConfig:
    """Settings of stage 3 (defaults are the CLI's)."""

    voxel_size: float = 0.01
    dilation_radius: int = 1
    num_movable: int | None = None  # None: automatic part count
    joint_types: tuple[str, ...] | None = None  # one per movable part; None: guessed
    method: str = "refined"
    min_component_voxels: int = 30
    min_overlap: float = 0.5
    split_fraction: float = 0.03
    attach_tolerance: float = 1.0  # voxels
    landing_tolerance: float = 1.5  # voxels
    fine_split_shift: float = 1.0  # voxels: cut pieces whose motions agree within this are one part (`merge_alike`)
    auto_min_relative_size: float = 0.2
    icp_points: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.num_movable is not None and self.num_movable < 1:
            raise ValueError(f"the number of movable parts must be at least 1, got {self.num_movable}")
        if self.joint_types is not None:
            bad = [t for t in self.joint_types if t not in JOINT_TYPES]
            if bad:
                raise ValueError(f"joint types must be among {JOINT_TYPES}, got {bad}")
            if self.num_movable is not None and len(self.joint_types) != self.num_movable:
                raise ValueError(f"{len(self.joint_types)} joint types given for {self.num_movable} movable parts")


@dataclass(eq=False)
class PartEstimate:
    """One movable part: canonical voxels, the matched component of the other state, motion c -> o. Parts compare by
    identity (their fields hold arrays)."""

    source: int  # canonical component it comes from
    voxels: np.ndarray  # (M, 3) canonical voxel indices
    matched_component: int  # the other state's component holding most matched voxels (-1: none)
    matched_voxels: np.ndarray  # (M', 3) the other state's dynamic voxels covered by the moved part
    overlap: float
    rigid_transform: np.ndarray  # (4, 4) unconstrained fit (refined) or the plane estimate (plane)
    weak: bool = False
    split: bool = False  # cut out of a larger part by `split_parts`
    slide: np.ndarray | None = None  # (3,) the direction a part split from a sliding one translates along
    fitted: str | None = None  # the joint model whose motion the global fit chose (kept as that model's motion)
    attached: list[int] = field(default_factory=list)  # further canonical components attached to it
    transform: np.ndarray = field(default_factory=lambda: np.eye(4))  # (4, 4) motion of `joint_type`
    joint_type: str = "revolute"
    type_guess: str = "revolute"
    type_source: str = "guess"
    residuals: dict[str, float] = field(default_factory=dict)  # `truncated_residual` of rigid/revolute/prismatic
    model_overlaps: dict[str, float] = field(default_factory=dict)  # overlap of the revolute and prismatic models
    model_transforms: dict[str, np.ndarray] = field(default_factory=dict)  # (4, 4) motion of each joint model


@dataclass
class VoxelizeResult:
    """Everything stage 3 computes for one scene."""

    grid: VoxelGrid
    static: np.ndarray  # (M, 3) voxel indices
    canonical: StateVoxels
    other: StateVoxels
    parts: list[PartEstimate]
    skipped: list[dict]  # candidates not used and why
    method: str


def build_states(points_c: np.ndarray, points_o: np.ndarray,
                 config: VoxelizeConfig) -> tuple[VoxelGrid, np.ndarray, StateVoxels, StateVoxels]:
    """Shared grid, static voxel indices (M, 3), and both states' voxels with their dynamic components."""
    for name, pts in (("canonical", points_c), ("other", points_o)):
        if len(pts) == 0:
            raise ValueError(f"the {name} state has no opaque points")
        if not np.all(np.isfinite(pts)):
            raise ValueError(f"the {name} state has non-finite point positions")
    grid = VoxelGrid.around([points_c, points_o], config.voxel_size)
    occ_c, occ_o = grid.occupancy(points_c), grid.occupancy(points_o)
    static, dyn_c, dyn_o = split_static_dynamic(occ_c, occ_o, config.dilation_radius)
    if not dyn_c.any() and not dyn_o.any():
        raise ValueError("no dynamic voxels: the two states look identical at this voxel size "
                         f"({config.voxel_size}); check the coarse models or use a smaller --voxel_size")
    states = [StateVoxels(grid, np.asarray(pts, np.float64), occ, dyn,
                          connected_components(dyn, config.min_component_voxels))
              for pts, occ, dyn in ((points_c, occ_c, dyn_c), (points_o, occ_o, dyn_o))]
    return grid, np.argwhere(static), states[0], states[1]


class _Selection:
    """Book-keeping of `select_parts`: the accepted parts, the skipped candidates, weak fall-backs."""

    def __init__(self) -> None:
        self.parts: list[PartEstimate] = []
        self.skipped: list[dict] = []
        self.weak: list[tuple[dict, int, np.ndarray, Match]] = []

    def skip(self, source: int, voxels: np.ndarray, reason: str) -> dict:
        self.skipped.append({"component": source, "voxels": int(len(voxels)), "reason": reason})
        return self.skipped[-1]

    def owner(self, centres: np.ndarray, match: Match, tolerance: float) -> int | None:
        """Index of an accepted part at least twice the size of the voxels `centres` (M, 3) that moves them like
        `match` does (mean distance below `tolerance`), if any."""
        moved = apply_transform(match.transform, centres)
        for i, part in enumerate(self.parts):
            gap = np.linalg.norm(apply_transform(part.rigid_transform, centres) - moved, axis=1).mean()
            if len(centres) < 0.5 * len(part.voxels) and gap < tolerance:
                return i
        return None

    def scraps(self) -> list[PartEstimate]:
        """Take out and return the accepted parts smaller than `SCRAP_FRACTION` of the largest: small pieces match
        something easily and must not fill the requested count while a split or a weaker large piece could."""
        largest = max((len(part.voxels) for part in self.parts), default=0)
        scraps = [part for part in self.parts if len(part.voxels) < SCRAP_FRACTION * largest]
        self.parts = [part for part in self.parts if part not in scraps]
        return scraps

    def add(self, source: int, voxels: np.ndarray, match: Match, centres: np.ndarray, attach_tolerance: float) -> None:
        """Accept a part, or attach it to an accepted part it belongs to (see the module docstring)."""
        owner = self.owner(centres, match, attach_tolerance)
        if owner is None:
            self.parts.append(PartEstimate(source, voxels, match.target, match.matched_voxels, match.overlap,
                                           match.transform))
        else:
            self.parts[owner].voxels = np.concatenate([self.parts[owner].voxels, voxels])
            self.parts[owner].attached.append(source)


def select_parts(matcher: PartMatcher, config: VoxelizeConfig) -> tuple[list[PartEstimate], list[dict]]:
    """Movable parts among the canonical components, by the rule of this module's docstring; also the skipped ones."""
    c, need, vs = matcher.c, config.num_movable, matcher.grid.voxel_size
    sel = _Selection()
    candidates: list[tuple[int, np.ndarray, Match]] = []
    pool: list[np.ndarray] = []  # every non-occluded piece considered
    for k, comp in enumerate(c.components):
        sizes = sorted((len(v) for _, v, _ in candidates), reverse=True)
        if need is not None and len(sizes) >= need and len(comp) < sizes[need - 1]:
            sel.skip(k, comp, "smaller than the requested number of larger parts")
            continue
        if need is None and sizes and len(comp) < config.auto_min_relative_size * sizes[0]:
            sel.skip(k, comp, "too small for an automatically counted part")
            continue
        occluded = matcher.occluded(comp)
        if occluded.any():
            sel.skip(k, comp[occluded], "occluded static: inside the other state's shell where it is")
        for piece in connected_components(matcher.grid.mask(comp[~occluded]), config.min_component_voxels):
            pool.append(piece)
            parts = []
            for sub in fine_pieces(matcher, piece):
                min_piece = max(config.min_component_voxels, int(config.split_fraction * len(sub)))
                found, failed = segment_by_motion(matcher, sub, config.min_overlap, min_piece)
                parts += found
                for voxels, match, reason in failed:
                    record = sel.skip(k, voxels, reason)
                    if match is not None:
                        sel.weak.append((record, k, voxels, match))
            joined = merge_alike(matcher, parts, config.fine_split_shift * vs)
            candidates += [(k, voxels, match) for voxels, match in joined]
    candidates.sort(key=lambda entry: -len(entry[1]))
    for k, voxels, match in candidates:
        if need is not None and len(sel.parts) >= need:
            sel.skip(k, voxels, "beyond the requested part count")
        elif need is None and len(voxels) < config.auto_min_relative_size * len(candidates[0][1]):
            sel.skip(k, voxels, "too small for an automatically counted part")
        else:
            sel.add(k, voxels, match, matcher.grid.centres(voxels), config.attach_tolerance * vs)
    scraps = sel.scraps() if need is not None else []
    if need is not None and len(sel.parts) < need:
        split_parts(matcher, sel, need, config)
    if need is not None and len(sel.parts) < need:
        fill_weak(matcher, sel, need, config)
    sel.parts += scraps[:max(0, (need or 0) - len(sel.parts))]
    if config.joint_types is not None and pool and need >= 2:
        global_fit(matcher, sel, np.concatenate(pool), config)
    if need is not None and len(sel.parts) < need:
        raise ValueError(f"{need} movable parts requested but only {len(sel.parts)} dynamic components have a "
                         f"counterpart in the other state ({len(c.components)} canonical components of >= "
                         f"{config.min_component_voxels} voxels; skipped: {sel.skipped}); lower --num_parts or "
                         "check the coarse models")
    if not sel.parts:
        raise ValueError(f"no dynamic component has a rigid counterpart in the other state (skipped: {sel.skipped})")
    return sel.parts, sel.skipped


def global_fit(matcher: PartMatcher, sel: _Selection, voxels: np.ndarray, config: VoxelizeConfig) -> None:
    """Replace the parts found one motion at a time by the global choice of one motion per given joint type over all
    considered canonical `voxels` (M, 3) (`multi_motion.fit_motions`), when that choice explains the scene better
    (`SceneCost.total`). Run for every scene of two or more parts of given types (step 5 of the module docstring);
    a replaced part is recorded as skipped with both costs."""
    scene = SceneCost(matcher, voxels, seed=config.seed)
    need = len(config.joint_types)
    current = scene.total([scene.motion(part.rigid_transform) for part in sel.parts]) if len(
        sel.parts) == need else np.inf
    found, cost = fit_motions(scene, config.joint_types, config.min_component_voxels, seed=config.seed)
    if len(found) < need or cost >= current:
        return
    for part in sel.parts:
        sel.skip(part.source, part.voxels, f"replaced by the global motion fit (scene cost {cost:.0f} < {current:.0f})")
    labels = matcher.c.labels
    sel.parts = [PartEstimate(int(np.bincount(np.maximum(labels[tuple(v.T)], 0)).argmax()), v, m.target,
                              m.matched_voxels, m.overlap, m.transform, fitted=kind) for v, m, kind in found]


def fill_weak(matcher: PartMatcher, sel: _Selection, need: int, config: VoxelizeConfig) -> None:
    """Fill the missing parts from the pieces `segment_by_motion` rejected: those whose match is convincing (rejected
    only for landing too little of their piece or for covering changes another motion covers) first, then by size;
    a piece that moves like an accepted part is attached to it, one that mostly overlaps a part is skipped."""
    vs = matcher.grid.voxel_size
    for record, k, voxels, match in sorted(sel.weak, key=lambda e: (e[3].overlap < config.min_overlap, -len(e[2]))):
        if len(sel.parts) >= need:
            return
        keys = matcher.grid.keys(voxels)
        if any(np.isin(keys, matcher.grid.keys(part.voxels)).mean() > 0.5 for part in sel.parts):
            continue
        count = len(sel.parts)
        sel.add(k, voxels, match, matcher.grid.centres(voxels), config.attach_tolerance * vs)
        if len(sel.parts) > count:
            sel.parts[-1].weak = True
            record["reason"] += "; used as a weak part to reach the requested count"


def split_parts(matcher: PartMatcher, sel: _Selection, need: int, config: VoxelizeConfig) -> None:
    """With fewer convincing parts than requested, split accepted parts, largest first, into sliding sub-parts that
    move apart by more than `fine_split_shift` voxels (`split_by_local_motions`) until the count is reached; a part
    keeps its place when it does not split. Of more parts than requested, the largest are kept (a scrap accepted
    beside one large block of touching drawers gives way to the block's sub-parts).

    Only parts that slide are split: those a translation explains within `SLIDE_MARGIN` of their rigid fit's
    overlap, split from that translation (two drawers side by side pulled out by 23 and 24 cm fit one rigid motion
    best by turning 11°, which no sub-part does); the chunks of a turning door each fit a hinge of their own."""
    vs = matcher.grid.voxel_size
    for part in sorted(sel.parts, key=lambda part: -len(part.voxels)):
        if len(sel.parts) >= need:
            break
        points = matcher.sample(matcher.c.points_in(part.voxels))
        motion = matcher.fit_translation(part.voxels, points, part.rigid_transform, part.matched_voxels)
        if matcher.overlap(motion, part.voxels) < matcher.overlap(part.rigid_transform, part.voxels) - SLIDE_MARGIN:
            continue
        min_piece = max(config.min_component_voxels, int(config.split_fraction * len(part.voxels)))
        subparts = split_by_local_motions(matcher, part.voxels, motion, config.min_overlap, min_piece,
                                          config.fine_split_shift * vs, seed=config.seed)
        if len(subparts) < 2:
            continue
        sel.parts.remove(part)
        sel.parts += [PartEstimate(part.source, voxels, m.target, m.matched_voxels, m.overlap, m.transform,
                                   split=True, slide=slide_direction(motion)) for voxels, m in subparts]
    sel.parts.sort(key=lambda part: -len(part.voxels))
    for part in sel.parts[need:]:
        sel.skip(part.source, part.voxels, "beyond the requested part count after splitting")
    del sel.parts[need:]


def finalise_part(matcher: PartMatcher, part: PartEstimate, joint_type: str | None, method: str) -> None:
    """Fill in the part's type guess, residuals and its motion constrained to its joint type (given or guessed).

    refined: revolute = the rigid ICP fit without its screw translation along the axis, its axis then placed by
    overlap (`place_axis`) when it turns by more than `SLIDING_DEGREES`; prismatic = the best
    translation-only ICP fit (`PartMatcher.fit_translation`); the guess compares the overlaps of the two models
    (`guess_joint_type`). plane: the paper's plane estimate onto the matched component; it has no translation
    estimate, so prismatic = identity, and the guess is 'revolute' unless the estimate fell back to the identity.
    """
    points = matcher.sample(matcher.c.points_in(part.voxels))
    if method == "plane":
        target = part.matched_voxels if part.matched_component < 0 else matcher.o.components[part.matched_component]
        rigid, translation = matcher.plane_estimate(part.voxels, target), np.eye(4)
    else:
        rigid = part.rigid_transform
        translation = rigid if part.fitted == "prismatic" else matcher.fit_translation(
            part.voxels, points, rigid, part.matched_voxels, part.slide)
    revolute = joint_to_matrix(matrix_to_joint(rigid, "revolute"))
    if method != "plane" and rotation_angle(revolute) >= np.radians(SLIDING_DEGREES):  # no axis to place otherwise
        revolute = place_axis(matcher, revolute, part.voxels)
    part.rigid_transform = rigid
    part.residuals = {"rigid": matcher.truncated_residual(rigid, points),
                      "revolute": matcher.truncated_residual(revolute, points),
                      "prismatic": matcher.truncated_residual(translation, points)}
    part.model_overlaps = {"revolute": matcher.overlap(revolute, part.voxels),
                           "prismatic": matcher.overlap(translation, part.voxels)}
    if method == "plane":
        part.type_guess = "prismatic" if np.allclose(rigid, np.eye(4)) else "revolute"
    else:
        part.type_guess = guess_joint_type(rigid, part.model_overlaps["revolute"], part.model_overlaps["prismatic"])
    part.model_transforms = {"revolute": revolute, "prismatic": translation}
    set_joint_type(part, joint_type or part.type_guess, "given" if joint_type else "guess")


def place_axis(matcher: PartMatcher, revolute: np.ndarray, voxels: np.ndarray, reach: int = AXIS_REACH) -> np.ndarray:
    """The revolute motion (4, 4) of the canonical `voxels` (M, 3) with its axis moved across itself (up to `reach`
    voxels) and its angle adjusted (up to 1°) to the best overlap, coarse to fine.

    ICP places the axis of a flat part poorly: a door's panel lands on the closed door wherever it slides within its
    plane, and points the other state hides (an oven's inside, seen past its open door) pull the fit. The overlap,
    which discounts hidden voxels and asks the moved part to cover the other state's change, pins the hinge (the
    synthetic oven on ground-truth depth: 6 cm off after ICP, 1 mm after this search). The ICP axis is kept unless
    another beats its overlap by `AXIS_MIN_GAIN`.
    """
    joint = matrix_to_joint(revolute, "revolute")
    direction, origin = np.asarray(joint["axis_direction"]), np.asarray(joint["axis_origin"])
    u = np.cross(direction, np.eye(3)[np.argmin(np.abs(direction))])
    u /= np.linalg.norm(u)
    v = np.cross(direction, u)
    vs = matcher.grid.voxel_size

    def motion(a: float, b: float, turn: float) -> np.ndarray:
        return rotation_about_line(origin + vs * (a * u + b * v), direction, np.radians(joint["motion"] + turn))

    def best(candidates: list[tuple[float, float, float]]) -> tuple[float, tuple[float, float, float]]:
        return max((matcher.overlap(motion(*c), voxels), c) for c in candidates)

    start = matcher.overlap(revolute, voxels)
    grid = range(-reach, reach + 1, 2)
    _, (a, b, _) = best([(a, b, 0.0) for a in grid for b in grid])
    score, chosen = best([(a + da, b + db, turn) for da in (-1, 0, 1) for db in (-1, 0, 1)
                          for turn in (-1.0, -0.5, 0.0, 0.5, 1.0)])
    return motion(*chosen) if score >= start + AXIS_MIN_GAIN else revolute


def set_joint_type(part: PartEstimate, joint_type: str, source: str) -> None:
    """Constrain the part's motion to `joint_type` (its model transform and overlap), noting where the type came from."""
    part.joint_type, part.type_source = joint_type, source
    part.transform = part.model_transforms[joint_type]
    part.overlap = part.model_overlaps[joint_type]


def assign_joint_types(parts: list[PartEstimate], types: tuple[str, ...]) -> None:
    """Give the parts the joint types `types` (a multiset, one per part, in any order): each part gets the type whose
    motion model explains it better, by a maximum-overlap assignment (so a table listing 'p, p, r, r' does not need to
    know which component stage 3 found first)."""
    overlaps = np.array([[part.model_overlaps[t] for t in types] for part in parts])
    rows, cols = linear_sum_assignment(-overlaps)
    for row, col in zip(rows, cols):
        set_joint_type(parts[row], types[col], "given")


def discover_parts(points_c: np.ndarray, points_o: np.ndarray, config: VoxelizeConfig) -> VoxelizeResult:
    """Stage 3 on point arrays: movable parts of the canonical state (N, 3) and their motions to the other (M, 3)."""
    grid, static, canonical, other = build_states(points_c, points_o, config)
    if not canonical.components:
        raise ValueError(f"the canonical state has no dynamic component of >= {config.min_component_voxels} voxels")
    matcher = PartMatcher(canonical, other, icp_points=config.icp_points, landing_tolerance=config.landing_tolerance,
                          seed=config.seed)
    parts, skipped = select_parts(matcher, config)
    if config.joint_types is not None and len(config.joint_types) != len(parts):
        raise ValueError(f"{len(config.joint_types)} joint types given but {len(parts)} movable parts found")
    for part in parts:
        finalise_part(matcher, part, None, config.method)
    if config.joint_types is not None:
        assign_joint_types(parts, config.joint_types)
    for i in complete_sliding_parts(matcher, parts):
        source = parts[i].type_source
        finalise_part(matcher, parts[i], parts[i].joint_type, config.method)
        parts[i].type_source = source
    return VoxelizeResult(grid, static, canonical, other, parts, skipped, config.method)
