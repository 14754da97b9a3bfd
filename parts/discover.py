"""Stage 3's part discovery: movable parts of the canonical state, their motions to the other state, joint types.

1. Samples: each state's surface points averaged per voxel of one shared grid.
2. Evidence (`parts.observation`): canonical samples where the other state's cameras see empty space, and the other
   state's samples where the canonical cameras do. The static body explains everything else, including surfaces one
   state hides (a cabinet's inside behind its closed door).
3. Hypotheses (`parts.hypotheses`): rigid motions fitted to the connected pieces of evidence of both states and to
   their chunks.
4. Selection (`parts.selection`): the motions that explain the evidence of both states, one part paying for itself
   in explained surface (facility location, with re-estimation). The part count is its outcome; a requested count
   fixes it.
5. Labelling (`parts.labelling`): every canonical sample takes the static body or one motion, by what the other
   state says of it under each motion, smoothed over neighbours. Connected pieces of one motion become separate parts
   (two drawers pulled out alike are two parts; a rigid part is connected); pieces explaining less than the opening
   cost are returned to the body.
6. Joints (`parts.joints`): revolute and prismatic fits per part, the type the evidence prefers, or the given types
   assigned as a multiset.

Every candidate not kept is reported in `skipped` with its size and the reason.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from parts.accounts import Accounts, Landing, claimed_cost, owners
from parts.attachment import attachment, contact, engaged, twin
from parts.hypotheses import HypothesisMaker, distinct
from parts.joints import JOINT_TYPES, JointFit, assign_types, fit_joints, preferred_type
from parts.labelling import data_costs, potts_labels, seeded_labels, turn
from parts.motion import (Box, Side, along_axis, along_box, axis_scan, box_frame, compass_search, fit_facing,
                          hinge_scan, invert, is_translation, moved_apart)
from parts.observation import FREE, SUPPORTED, Observation, View
from parts.refine import RegionSplitter, connected_pieces
from parts.samples import Samples, measured_tolerance
from parts.selection import Selector
from utils.neighbours import query
from utils.point_cloud import checked_points
from utils.rigid_fit import apply_transform, make_transform
from utils.voxel_grid import VoxelGrid
from utils.voxel_grid import connected_components as voxel_components

DEFAULT_VOXEL_SIZE = 0.01
MERGE_APART = 2.0  # tolerances: touching parts whose motions move them this close together are one part
PART_REACH = 1.5  # voxels: samples of one motion closer than this belong to one part (its faces meet at its edges)
EQUIVALENT = 0.02  # mean cost per sample below which two motions of a part are equally good (surface noise)
SETTLE_POINTS = 4000  # samples of a part on which the candidate motions are compared in `settle`
SETTLE_FIT_POINTS = 1000  # of them, those its motions are refitted and screened on
PART_STARTS = 4  # starts of a whole part's motion refitted in `settle`
SETTLE_OPTIONS = 24  # motions, landing most samples, that `settle` compares
SLIDE_POINTS = 500  # samples of a part on which `slide` refines its translations on the cost
SLIDE_STEP = 4.0  # voxels: the first step of `slide`'s search; it stops below a tenth of a voxel
HINGE_STEP, HINGE_FINE = np.radians(10.0), np.radians(0.5)  # `hinge_scan`'s angle step and where its refinement stops
HINGE_STARTS = 4  # rotations about the part's box edges, the cheapest, refitted in `settle`
ABSORB_ROUNDS = 3  # further rounds of absorb (then settle of the parts that grew) once the parts have settled
HOST_REACH = 4.0  # voxels: a part may join another within this distance (the faces of a door or drawer front lie a
# board's thickness apart when the edges between them are not seen)


@dataclass(frozen=True)
class PartsConfig:
    """Settings of stage 3's part discovery. Lengths are in voxels of `voxel_size` (scene units)."""

    voxel_size: float = DEFAULT_VOXEL_SIZE
    tolerance: float | None = None  # voxels: a moved sample this close to a surface lands on it (None: measured)
    margin: float = 2.0  # voxels: a sample must lie this far in front of a camera's first surface to be seen through
    min_free_views: int = 2  # views that must see through a sample for it to be in empty space
    min_part_area: float = 0.015  # scene units^2 of moved surface one more part must explain (the model-selection
    # penalty, in samples: min_part_area / voxel_size^2); smaller parts are below this stage's resolution
    smoothness: float = 0.15  # Potts cost per disagreeing neighbour in the labelling
    num_movable: int | None = None  # None: the part count is chosen by the selection
    joint_types: tuple[str, ...] | None = None  # one per movable part, any order; None: the evidence decides
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.voxel_size > 0:
            raise ValueError(f"voxel_size must be positive, got {self.voxel_size}")
        if self.num_movable is not None and self.num_movable < 1:
            raise ValueError(f"the number of movable parts must be at least 1, got {self.num_movable}")
        if self.joint_types is not None:
            bad = [t for t in self.joint_types if t not in JOINT_TYPES]
            if bad:
                raise ValueError(f"joint types must be among {JOINT_TYPES}, got {bad}")
            if self.num_movable is not None and len(self.joint_types) != self.num_movable:
                raise ValueError(f"{len(self.joint_types)} joint types given for {self.num_movable} movable parts")

    @property
    def open_cost(self) -> float:
        """The opening cost of one more part, in samples (voxels of surface)."""
        return self.min_part_area / self.voxel_size ** 2

    @property
    def requested(self) -> int | None:
        """The requested number of movable parts, if any."""
        return len(self.joint_types) if self.joint_types is not None else self.num_movable


@dataclass
class Part:
    """One movable part: canonical voxels and samples, the other state's voxels it explains, its motion c -> o."""

    voxels: np.ndarray  # (M, 3) canonical voxel indices
    points: np.ndarray  # (M, 3) canonical samples
    matched_voxels: np.ndarray  # (M', 3) the other state's voxels its motion explains
    rigid_transform: np.ndarray  # (4, 4) selected rigid motion, refitted on the part
    fits: dict[str, JointFit]  # both joint models, fitted once the part is final
    joint_type: str = "revolute"
    type_source: str = "evidence"  # "evidence" or "given"
    evidence: int = 0  # samples of both states the part explains
    split: bool = False  # one of several connected pieces following one motion
    matched_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # (M', 3) the other state's samples

    @property
    def transform(self) -> np.ndarray:
        """(4, 4) motion c -> o of the part's joint type."""
        return self.fits[self.joint_type].transform

    @property
    def preferred_type(self) -> str:
        return preferred_type(self.fits)


@dataclass
class PartsResult:
    """Everything stage 3 finds for one object."""

    grid: VoxelGrid
    static_voxels: np.ndarray  # (M0, 3) canonical voxels of the static body
    parts: list[Part]
    skipped: list[dict]
    stats: dict = field(default_factory=dict)


class Discovery:
    """The steps of the module docstring, on the two states' points and views."""

    def __init__(self, points_c: np.ndarray, views_c: list[View], points_o: np.ndarray, views_o: list[View],
                 config: PartsConfig) -> None:
        points_c = checked_points(points_c, "the canonical state's surface points")
        points_o = checked_points(points_o, "the other state's surface points")
        self.config = config
        vs = config.voxel_size
        self.grid = VoxelGrid.around([points_c, points_o], vs)
        options = dict(tolerance=vs, margin=config.margin * vs, min_free_views=config.min_free_views)
        self.obs_c, self.obs_o = Observation(points_c, views_c, **options), Observation(points_o, views_o, **options)
        self.c, self.o = Samples.of(self.obs_c, self.grid), Samples.of(self.obs_o, self.grid)
        self.tolerance = (config.tolerance * vs if config.tolerance is not None
                          else measured_tolerance(self.c.points, self.o.surface.tree, vs))
        self.obs_c.tolerance = self.obs_o.tolerance = self.tolerance
        self.reach, self.host_reach = PART_REACH * vs, HOST_REACH * vs
        self.no_claims = np.zeros(len(self.o.points), dtype=np.int64)  # `exclusive` with the static body's surface only
        self.skipped: list[dict] = []
        self.stats: dict = {}

    def skip(self, what: str, size: int, reason: str) -> None:
        self.skipped.append({"candidate": what, "samples": int(size), "reason": reason})

    def evidence(self) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the canonical samples the other state sees through, and of the other state's samples the
        canonical state sees through; also notes which samples of each the static body explains (`static_c`,
        `static_o`: the other state shows a surface there)."""
        status_c = self.obs_o.judge(self.c.points, self.c.sides)[0]
        status_o = self.obs_c.judge(self.o.points, self.o.sides)[0]
        self.static_c, self.static_o = status_c == SUPPORTED, status_o == SUPPORTED
        ev_c, ev_o = np.flatnonzero(status_c == FREE), np.flatnonzero(status_o == FREE)
        self.stats["evidence"] = {"canonical": int(len(ev_c)), "other": int(len(ev_o))}
        self.stats["tolerance"] = round(self.tolerance, 5)
        if len(ev_c) + len(ev_o) < self.config.open_cost:
            raise ValueError(f"no motion between the two states: {len(ev_c)} canonical and {len(ev_o)} other "
                             f"samples lie where the other state sees empty space (fewer than one part's worth, "
                             f"{self.config.open_cost:g}); check that the two states differ and that the coarse "
                             "models are complete")
        return ev_c, ev_o

    def pieces(self, samples: Samples, index: np.ndarray) -> list[np.ndarray]:
        """Connected pieces (index arrays into `samples`) of the samples `index` with at least half an opening cost."""
        if len(index) == 0:
            return []
        key = {tuple(v): i for i, v in zip(index, samples.voxels[index])}
        comps = voxel_components(self.grid.mask(samples.voxels[index]), max(3, int(self.config.open_cost / 2)))
        return [np.array([key[tuple(v)] for v in comp]) for comp in comps]

    def hypotheses(self, ev_c: np.ndarray, ev_o: np.ndarray) -> list[np.ndarray]:
        """Candidate motions c -> o from the pieces of evidence of both states."""
        vs, min_size = self.config.voxel_size, max(3, int(self.config.open_cost / 2))
        pieces_c, pieces_o = self.pieces(self.c, ev_c), self.pieces(self.o, ev_o)
        targets_o = [(self.o.voxels[p], self.o.points[p]) for p in pieces_o]
        targets_c = [(self.c.voxels[p], self.c.points[p]) for p in pieces_c]
        forward = HypothesisMaker(vs, self.tolerance, self.o.surface, self.o.voxels, self.config.seed)
        self.maker, self.targets_o = forward, targets_o  # `settle` asks them for starts of whole parts
        backward = HypothesisMaker(vs, self.tolerance, self.c.surface, self.c.voxels, self.config.seed)
        motions = []
        for p in pieces_c:
            motions += forward.for_piece(self.c.voxels[p], self.c.points[p], targets_o, min_size)
        for p in pieces_o:
            motions += [invert(T) for T in backward.for_piece(self.o.voxels[p], self.o.points[p], targets_c, min_size)]
        probe = self.c.points[ev_c] if len(ev_c) else self.c.points
        self.probe = probe[np.random.default_rng(self.config.seed).choice(len(probe), min(300, len(probe)),
                                                                          replace=False)]
        kept = distinct(motions, self.probe, self.tolerance / 3)
        self.stats["hypotheses"] = {"pieces": [len(pieces_c), len(pieces_o)], "fitted": len(motions),
                                    "distinct": len(kept)}
        return kept

    def run(self) -> PartsResult:
        times = {}
        start = time.perf_counter()

        def lap(name: str) -> None:
            times[name] = round(time.perf_counter() - start - sum(times.values()), 3)

        ev_c, ev_o = self.evidence()
        lap("evidence")
        candidates = self.hypotheses(ev_c, ev_o)
        lap("hypotheses")
        selector = Selector(ev_c, self.c, self.static_c, ev_o, self.o, self.static_o, self.tolerance,
                            self.config.open_cost, seed=self.config.seed)
        selection = selector.run(candidates, self.config.requested)
        self.candidates = distinct(selection.motions, self.probe, self.tolerance / 3, kept=candidates)  # and refits
        lap("selection")
        if not selection.motions:
            raise ValueError(f"no motion explains enough of the evidence to be a part (each must explain "
                             f"{self.config.open_cost:g} samples; evidence: {self.stats['evidence']})")
        labels = self.label(selection.motions, [ev_c[selection.owner[:len(ev_c)] == k]
                                                for k in range(len(selection.motions))])
        regions = self.split_regions(labels, selection.motions)
        lap("labelling")
        motions = [T for _, T in regions]
        labels = self.label(motions, [index for index, _ in regions])
        parts = self.settle(self.make_parts(labels, motions), refit=False)
        parts = self.settle(self.absorb(self.merge_alike(parts)))
        for _ in range(ABSORB_ROUNDS):  # settled motions may make more give-ups pay: absorb again, settle the hosts
            before = parts
            parts = self.absorb(parts)
            if len(parts) == len(before):
                break
            parts = self.settle(parts, only=[k for k, part in enumerate(parts)
                                             if not any(part is old for old in before)])
        regrouped = self.regroup(parts)
        if len(regrouped) < len(parts):  # a joined part may take up more pieces: absorb, settle the parts that grew
            parts = self.absorb(regrouped)
            parts = self.settle(parts, only=[k for k, part in enumerate(parts)
                                             if not any(part is old for old in regrouped)])
        parts = self.keep_requested(parts)
        for part in parts:
            self.fit_joints(part)
        self.type_parts(parts)
        lap("joints")
        self.stats["seconds"] = times
        return PartsResult(self.grid, self.c.voxels[~self._in_parts(parts)], parts, self.skipped, self.stats)

    def label(self, motions: list[np.ndarray], regions: list[np.ndarray]) -> np.ndarray:
        """(S,) label of each canonical sample: 0 the body, k the k-th of `motions` (`parts.labelling`). `regions`
        holds each motion's canonical samples so far: the other state's surface they explain is theirs (`claims`),
        and another motion landing a sample there gains nothing by it."""
        costs = data_costs(self.c.points, motions, self.obs_o, self.c.sides)
        claim = self.claims(motions, regions)
        for k, T in enumerate(motions, start=1):
            costs[k] = self.exclusive(costs[k], np.arange(len(self.c.points)), T, claim, k)
        return potts_labels(costs, self.c.voxels, self.config.smoothness, seeded_labels(costs, self.c.points))

    def exclusive(self, costs: np.ndarray, index: np.ndarray, T: np.ndarray, claim: np.ndarray, owner: int
                  ) -> np.ndarray:
        """`costs` (N,) of the canonical samples `index` (N,) under motion T, raised to the hidden cost where T lands
        a sample on one of the other state's that the static body explains or another motion than `owner` claims
        (`claims`): one surface explains one part."""
        target = self.o.landing(apply_transform(T, self.c.points[index]), self.tolerance,
                                turn(T, self.c.sides[index]))
        return claimed_cost(Landing(costs, target), claim, owner, self.static_o)

    def claims(self, motions: list[np.ndarray], regions: list[np.ndarray]) -> np.ndarray:
        """(S_o,) the motion (1-based; 0: none) whose canonical region explains each of the other state's samples:
        moved back by it, the sample lands on the region; the closest landing wins."""
        return owners(self._claim_distances(motions, regions), self.tolerance)

    def split_regions(self, labels: np.ndarray, motions: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """The connected pieces of each motion's labelled samples, split by their motions (`parts.refine`), as
        (sample indices, motion); pieces under the opening cost are left to the body."""
        splitter = RegionSplitter(self.o.surface, self.tolerance, self.config.open_cost,
                                  self.reach, self.config.seed)
        regions = []
        for k, T in enumerate(motions, start=1):
            index = np.flatnonzero(labels == k)
            pieces = connected_pieces(self.c.points[index], self.reach)
            small = [len(p) for p in pieces if len(p) < self.config.open_cost]
            if small:
                self.skip(f"{len(small)} labelled pieces of motion {k}", sum(small),
                          f"connected pieces of at most {max(small)} samples, under the opening cost "
                          f"({self.config.open_cost:g} samples): left to the body")
            for piece in pieces:
                if len(piece) < self.config.open_cost:
                    continue
                piece = index[piece]
                regions += [(piece[i], M) for i, M in splitter.split_region(self.c.points[piece], T)]
        return regions

    def _in_parts(self, parts: list[Part]) -> np.ndarray:
        """(S,) bool: the canonical samples that belong to one of `parts`."""
        in_part = np.zeros(len(self.c.points), dtype=bool)
        for part in parts:
            in_part[self._sample_index(part.voxels)] = True
        return in_part

    def _sample_index(self, voxels: np.ndarray) -> np.ndarray:
        """Indices of the canonical samples at `voxels` (M, 3)."""
        keys = self.grid.keys(self.c.voxels)
        return np.flatnonzero(np.isin(keys, self.grid.keys(voxels)))

    def make_parts(self, labels: np.ndarray, motions: list[np.ndarray]) -> list[Part]:
        """Parts from the labelled canonical samples: each connected piece of one motion with at least the opening
        cost of samples; smaller pieces are left to the body."""
        parts = []
        for k, T in enumerate(motions, start=1):
            index = np.flatnonzero(labels == k)
            pieces = connected_pieces(self.c.points[index], self.reach)
            big = [index[p] for p in pieces if len(p) >= self.config.open_cost]
            small = [len(p) for p in pieces if len(p) < self.config.open_cost]
            if small:
                self.skip(f"{len(small)} pieces of motion {k}", sum(small),
                          f"connected pieces of at most {max(small)} samples, under the opening cost "
                          f"({self.config.open_cost:g} samples): left to the body")
            parts += [self.part(p, T, split=len(big) > 1) for p in big]
        return parts

    def settle(self, parts: list[Part], refit: bool = True, only: list[int] | None = None) -> list[Part]:
        """Each part's motion: among the candidates (`_options`) that explain its samples as well as its own motion
        (within EQUIVALENT per sample: the coarse surfaces' noise), the translations that keep it `engaged` and explain
        it as well as the best candidate does, if any (the simpler model: a drawer whose tray hides in both states is
        explained as well by a quarter turn), else those that keep it attached at least as well; of them, the one that
        keeps it attached best (`parts.attachment`), and of those that move its contact alike (within a tolerance),
        the cheapest; where that is a slide, the cheapest of those near options that slides along an axis of the part's
        box (`along_box`), if any: across a drawer front's slide the cost is nearly flat and a free search drifts. A
        part never trades attachment for cost: its own motion was chosen by cost already. Other parts'
        claims are left out so that two drawers taken for each other's can both settle. With `refit` false only the
        hypotheses are compared with the part's own motion (the pass on the labelled pieces). `only`: settle just these
        parts (by index), keeping the others as they are."""
        body = cKDTree(self.c.points[~self._in_parts(parts)])
        rng = np.random.default_rng(self.config.seed)
        return [self._settled(part, body, rng, refit) if only is None or k in only else part
                for k, part in enumerate(parts)]

    def _settled(self, part: Part, body: cKDTree, rng: np.random.Generator, refit: bool) -> Part:
        """`part` with its settled motion (see `settle`); `body` is the tree of the static body's samples."""
        index = self._sample_index(part.voxels)
        sample = rng.permutation(index)[:SETTLE_POINTS]
        box = box_frame(self.c.points[sample]) if refit else None
        options = self._options(part, sample[:SETTLE_FIT_POINTS], refit, box)
        totals = np.array([self.explanation_cost(T, sample, len(index) / len(sample)) for T in options])
        touching = contact(part.points, body, self.host_reach)
        moves = np.array([attachment(T, touching) for T in options])
        near = totals <= totals[0] + EQUIVALENT * len(index)
        slides = (totals <= totals.min() + EQUIVALENT * len(index)) & \
            np.array([is_translation(T) and engaged(T, part.points, self.host_reach) for T in options])
        near = slides if slides.any() else near & (moves <= moves[0] + self.tolerance)
        alike = near & (moves <= moves[near].min() + self.tolerance)
        best = int(np.flatnonzero(alike)[np.argmin(totals[alike])])
        if box is not None and is_translation(options[best]):  # a slide as good held to the box's axis, if any
            aligned = near & along_box(options, box.axes)
            if aligned.any():
                best = int(np.flatnonzero(aligned)[np.argmin(totals[aligned])])
        if best == 0:
            return part
        self.stats.setdefault("settled", []).append(
            {"samples": int(len(index)), "attachment": [round(float(moves[0]), 4), round(float(moves[best]), 4)],
             "cost": [round(float(totals[0]), 1), round(float(totals[best]), 1)]})
        return self.part(index, options[best], split=part.split)

    def _options(self, part: Part, index: np.ndarray, refit: bool, box: Box | None) -> list[np.ndarray]:
        """The motions a part may settle on, its own first. With `refit`: its own motion, its `twin`, its translation
        and the PART_STARTS best starts (`HypothesisMaker.starts`) of the whole part onto the other state's pieces of
        evidence, refitted (translations as translations; rotations pairing surfaces seen from the same side). And the
        SETTLE_OPTIONS hypotheses that land most of the canonical samples `index`, if at least half as many as the
        best does."""
        own = part.rigid_transform
        landed = np.array([self.maker.landed(T, self.c.points[index]) for T in self.candidates])
        order = np.argsort(-landed, kind="stable")[:SETTLE_OPTIONS]
        options = [own, *(self.candidates[k] for k in order if landed[k] >= 0.5 * landed.max())]
        if not refit:
            return options
        shift = make_transform(t=(apply_transform(own, part.points) - part.points).mean(axis=0))
        starts = self.maker.starts(part.voxels, part.points, self.targets_o)
        starts = sorted(starts, key=lambda T: -self.maker.landed(T, self.c.points[index]))[:PART_STARTS]
        slides = [self.refit_facing(T, index, "prismatic") for T in [shift, *starts] if is_translation(T)]
        hinges = self.hinges(index, box)
        rigid = [self.refit_facing(T, index) for T in [own, twin(own, part.points), *starts, *hinges]
                 if T is not None and not is_translation(T)]
        moved = [shift, *slides, *(T for T in starts if is_translation(T))]
        return options + slides + self.slide(moved, index, box) + hinges + rigid

    def hinges(self, index: np.ndarray, box: Box) -> list[np.ndarray]:
        """The HINGE_STARTS cheapest rotations of the canonical samples `index` about an edge of their box
        (`parts.motion.hinge_scan`, on SLIDE_POINTS of them): where a door opens far, the surface pieces the hypotheses
        pair may belong to other parts, and a start from the door's own hinge does not need them."""
        index = index[:SLIDE_POINTS]
        scanned = hinge_scan(lambda T: self.explanation_cost(T, index, 1.0), box, HINGE_STEP, HINGE_FINE)
        return [T for T, _ in sorted(scanned, key=lambda found: found[1])[:HINGE_STARTS]]

    def slide(self, starts: list[np.ndarray], index: np.ndarray, box: Box) -> list[np.ndarray]:
        """The translations `starts` of the canonical samples `index` refined on the cost itself (compass search on
        SLIDE_POINTS of them, from each start at least two voxels from every earlier one): where most of a drawer
        hides in both states, ICP pairs its hidden tray with the body's inner walls and stops short; the cost, which
        counts hidden samples as no evidence, does not. Also from the cheapest translation along each principal axis
        of the part (`parts.motion.axis_scan`), searched with a first step of one voxel: drawers, sliding panes and
        doors run along an axis of their own box, and a start there finds the slot that a start from the part's motion
        misses where identical fronts stack (it may have landed the part on a neighbour's front). And each of those
        held to its axis (`parts.motion.along_axis`)."""
        index = index[:SLIDE_POINTS]

        def cost(t: np.ndarray) -> float:
            return self.explanation_cost(make_transform(t=t), index, 1.0)

        vs = self.config.voxel_size
        scanned = axis_scan(cost, box, vs, self.host_reach)
        kept: list[tuple[np.ndarray, float]] = []
        for t, step in [*((T[:3, 3], SLIDE_STEP) for T in starts), *((t, 1.0) for t in scanned)]:
            if all(np.linalg.norm(t - k) >= 2 * vs for k, _ in kept):
                kept.append((t, step))
        return [make_transform(t=compass_search(cost, t, step * vs, vs / 10)[0]) for t, step in kept] + \
            [make_transform(t=along_axis(cost, t, vs, vs / 10)) for t in scanned]

    def explanation_cost(self, T: np.ndarray, sample: np.ndarray, scale: float) -> float:
        """What motion T costs a part: `label`'s costs of its canonical samples `sample`, times `scale` (the part's
        samples per sample), the static body's surface excluded; other parts' claims are left out (see `settle`)."""
        return float(claimed_cost(self._landing(T, sample), self.no_claims, 0, self.static_o).sum() * scale)

    def refit_facing(self, T: np.ndarray, index: np.ndarray, model: str = "rigid") -> np.ndarray:
        """T refitted by ICP of `model` of the canonical samples `index` onto the other state's surface seen from
        their side (`parts.motion.fit_facing`)."""
        return fit_facing(T, self.c.points[index], self.c.sides[index], self.obs_o.near_same_side,
                          self.obs_o.points, self.tolerance, model)

    def merge_alike(self, parts: list[Part]) -> list[Part]:
        """Parts joined while two of them touch (samples within the part reach) and their motions move the samples of
        both within MERGE_APART tolerances of each other: pieces of one rigid part that the labelling cut apart."""
        merged = True
        while merged:
            merged = False
            order = sorted(range(len(parts)), key=lambda i: len(parts[i].points))
            for i in order:
                j = self._alike_neighbour(parts, i)
                if j is None:
                    continue
                small, big = parts[i], parts[j]
                index = np.concatenate([self._sample_index(big.voxels), self._sample_index(small.voxels)])
                self.skip("part", len(small.voxels), f"moves like a part it touches ({len(big.voxels)} samples): "
                                                     "merged into it")
                parts[j] = self.part(index, big.rigid_transform, split=big.split)
                del parts[i]
                merged = True
                break
        return parts

    def absorb(self, parts: list[Part]) -> list[Part]:
        """Model selection once more on the final parts (`parts.accounts`): while giving a part up to a touching
        part's motion or to the static body lowers the whole labelling's cost (its samples' costs, one opening cost
        less, and the surface its claims free for the other parts) or raises it by less than the surface noise
        (EQUIVALENT per sample of the part: the simpler model), the part giving the largest drop is given up.
        Pieces of one rigid part that the labelling cut apart or gave slightly different motions go back together,
        and a fragment that claims a neighbour's surface with a spurious motion is weighed with the neighbour's loss;
        a part that moves unlike every other stays. (Two parts moving exactly alike are one part to two-state
        evidence.)"""
        accounts = self._accounts(parts)
        parts = list(parts)  # the caller's list stays as it was
        while parts:
            options = [(accounts.change(i, host) - EQUIVALENT * len(parts[i].points), i, host)
                       for i in range(len(parts)) for host in [-1, *self._touching(parts, i)]]
            drop, i, host = min(options)
            if drop >= 0:
                break
            small = parts.pop(i)
            accounts.give(i, host)
            if host < 0:
                self.skip("part", len(small.points), f"given to the static body: the labelling's cost, less the "
                                                     f"surface noise, drops by {-drop:.1f}")
                continue
            host -= int(host > i)
            big = parts[host]
            self.skip("part", len(small.points), f"given to the motion of a part it touches ({len(big.points)} "
                                                 f"samples): the labelling's cost, less the surface noise, drops by "
                                                 f"{-drop:.1f}")
            parts[host] = self.part(accounts.regions[host], big.rigid_transform, split=big.split)
        return parts

    def regroup(self, parts: list[Part]) -> list[Part]:
        """Parts that touch within the part reach (their union connected, as a rigid part is) made one while one
        motion of their union lowers the whole labelling's cost (`parts.accounts`; less the surface noise, EQUIVALENT
        per sample of the smaller, as in `absorb`), the pair giving the largest drop first. The labelling may cut one
        rigid part into pieces whose motions each fit their own piece (a strip of a drawer front turned onto a
        neighbour's edge) but none the others, so `absorb`, which only tries the parts' own motions, keeps them
        apart; the union's motion is searched as `settle` searches a part's, on the union's box, which spans the whole
        rigid part."""
        accounts = self._accounts(parts)
        parts = list(parts)  # the caller's list stays as it was
        rng = np.random.default_rng(self.config.seed)
        joined: dict[tuple[int, int], Part] = {}
        while len(parts) > 1:
            body = cKDTree(self.c.points[~self._in_parts(parts)])
            options = []
            for i in range(len(parts)):
                for j in (j for j in self._touching(parts, i, self.reach) if j > i):
                    union, key = np.concatenate([accounts.regions[i], accounts.regions[j]]), accounts.pair(i, j)
                    if key not in joined:
                        big = max(parts[i], parts[j], key=lambda part: len(part.points))
                        joined[key] = self._settled(self.part(union, big.rigid_transform, split=False), body, rng,
                                                    refit=True)
                    change = accounts.join_change(i, j, union, joined[key].rigid_transform)
                    options.append((change - EQUIVALENT * min(len(parts[i].points), len(parts[j].points)), i, j))
            if not options or min(options)[0] >= 0:
                break
            drop, i, j = min(options)
            union = joined[accounts.pair(i, j)]
            self.skip("part", len(parts[j].points), f"one motion of it and a part it touches ({len(parts[i].points)} "
                                                    f"samples) lowers the labelling's cost, less the surface noise, "
                                                    f"by {-drop:.1f}: joined")
            accounts.join(i, j, self._sample_index(union.voxels), union.rigid_transform)
            parts[i] = union
            del parts[j]
        return parts

    def _accounts(self, parts: list[Part]) -> Accounts:
        """The whole labelling's accounts (`parts.accounts`) with `parts` and the static body."""
        body_costs = data_costs(self.c.points, [], self.obs_o, self.c.sides)[0]
        return Accounts([self._sample_index(part.voxels) for part in parts], [part.rigid_transform for part in parts],
                        self._landing, self._claim_distance, self.static_o, body_costs, self.config.open_cost,
                        2 * self.tolerance)

    def _touching(self, parts: list[Part], i: int, reach: float | None = None) -> list[int]:
        """The parts within `reach` (default HOST_REACH) of part i."""
        tree = cKDTree(parts[i].points)
        reach = self.host_reach if reach is None else reach
        return [k for k, other in enumerate(parts) if k != i and
                np.isfinite(query(tree, other.points, distance_upper_bound=reach)[0]).any()]

    def _landing(self, T: np.ndarray, index: np.ndarray) -> Landing:
        """The canonical samples `index` under motion T: their costs and the other state's samples they land on."""
        moved, sides = apply_transform(T, self.c.points[index]), turn(T, self.c.sides[index])
        return Landing(self.obs_o.costs(moved, sides)[0], self.o.landing(moved, self.tolerance, sides))

    def _claim_distance(self, T: np.ndarray, index: np.ndarray) -> np.ndarray:
        """(S_o,) distance from each of the other state's samples, moved back by T, to the canonical samples `index`
        (inf beyond two tolerances: sample to sample, both voxel means up to half a voxel apart on one surface)."""
        return query(cKDTree(self.c.points[index]), apply_transform(invert(T), self.o.points),
                     distance_upper_bound=2 * self.tolerance)[0]

    def _claim_distances(self, motions: list[np.ndarray], regions: list[np.ndarray]) -> np.ndarray:
        """(K, S_o) distance from each of the other state's samples, moved back by motion k, to region k's canonical
        samples (inf beyond two tolerances, and for an empty region)."""
        dist = np.full((len(motions), len(self.o.points)), np.inf)
        for k, (T, region) in enumerate(zip(motions, regions)):
            if len(region):
                dist[k] = self._claim_distance(T, region)
        return dist

    def _alike_neighbour(self, parts: list[Part], i: int) -> int | None:
        """The largest part touching part i whose motion moves both within MERGE_APART tolerances of part i's."""
        tree = cKDTree(parts[i].points)
        best = None
        for j, other in enumerate(parts):
            if j == i or len(other.points) < len(parts[i].points):
                continue
            touch = np.isfinite(query(tree, other.points, distance_upper_bound=self.reach)[0]).any()
            both = np.concatenate([parts[i].points, other.points])
            if touch and moved_apart(parts[i].rigid_transform, other.rigid_transform, both) < \
                    MERGE_APART * self.tolerance and (best is None or len(other.points) > len(parts[best].points)):
                best = j
        return best

    def part(self, index: np.ndarray, T: np.ndarray, split: bool) -> Part:
        """One part from the canonical samples `index` and their motion T: the other state's samples it explains
        are those not explained by the body whose positions moved back by T land near the part's own samples."""
        points = self.c.points[index]
        own = cKDTree(points)
        back = apply_transform(invert(T), self.o.points)
        near = np.isfinite(query(own, back, distance_upper_bound=2 * self.tolerance)[0]) & ~self.static_o
        part = Part(self.c.voxels[index], points, self.o.voxels[near], T, {}, split=split)
        part.evidence = int(len(index) + near.sum())
        part.matched_points = self.o.points[near]
        return part

    def fit_joints(self, part: Part) -> None:
        """Both joint models fitted to a final part (`parts.joints`)."""
        own = cKDTree(part.points)
        part.fits = fit_joints(part.rigid_transform, Side(part.points, self.o.surface.tree),
                               Side(part.matched_points, own), self.tolerance)

    def keep_requested(self, parts: list[Part]) -> list[Part]:
        """With a requested count, the parts that explain most evidence; an error when fewer were found."""
        need = self.config.requested
        if need is None:
            return parts
        if len(parts) < need:
            raise ValueError(f"{need} movable parts requested but only {len(parts)} found (evidence: "
                             f"{self.stats.get('evidence')}; skipped: {self.skipped}); lower --num_parts or check the "
                             "coarse models")
        parts = sorted(parts, key=lambda p: -p.evidence)
        for part in parts[need:]:
            self.skip("part", len(part.voxels), f"beyond the requested part count ({need})")
        return parts[:need]

    def type_parts(self, parts: list[Part]) -> None:
        """Each part's joint type: given (assigned as a multiset) or the one the evidence prefers."""
        if self.config.joint_types is None:
            for part in parts:
                part.joint_type = part.preferred_type
            return
        conflicts = []
        for k, (part, joint_type) in enumerate(zip(parts, assign_types([p.fits for p in parts],
                                                                      self.config.joint_types)), start=1):
            part.joint_type, part.type_source = joint_type, "given"
            if joint_type != part.preferred_type:
                conflicts.append(f"part {k}: given {joint_type}, but its evidence prefers {part.preferred_type} "
                                 f"(BIC {part.fits[joint_type].bic:.0f} vs {part.fits[part.preferred_type].bic:.0f})")
        self.stats["type_conflicts"] = conflicts


def discover_parts(points_c: np.ndarray, views_c: list[View], points_o: np.ndarray, views_o: list[View],
                   config: PartsConfig) -> PartsResult:
    """Stage 3 on the canonical state's surface points (N, 3) and training views and the other state's (M, 3)."""
    return Discovery(points_c, views_c, points_o, views_o, config).run()
