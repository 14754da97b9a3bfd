"""Stage 4: geometry-motion alternating refinement (GEAR's EM) of a canonical 2DGS model with part logits and joints.

    python train.py --dataset gear --subset synthetic --scene_name cabinet --coarse_name coarse_gs --coarse_iter 30000

Reads (file names: scene/contract.py), never `gt/`:
  * stage 2: `<output_root>/<dataset>/<subset>/<scene>/<coarse_name>/point_cloud/iteration_<coarse_iter>/`
    `point_cloud_<c>.ply` of the canonical (larger-motion) state c;
  * stage 3: `joint_voxel_info.json` / `.npz` in the same folder (canonical state, initial parts, their joint types
    and joints c -> o);
  * stage 1: the label maps `masks/<c state>/train/<image>.npy` of the canonical training views (part prior).
Writes under `--model_path` (default `<output_root>/<dataset>/<subset>/<scene>/<model_name>`): the model contract of
`scene/trained_model.py` (`point_cloud/iteration_<N>/point_cloud.ply` with the part logits as features and
`articulation.json`) at `--checkpoint_iterations` and the last iteration, a resume checkpoint `chkpnt<N>.pth` next to
each (with every random state, so a resumed run equals an uninterrupted one), `train_log.jsonl` (loss terms, phase,
part counts and joints every `--log_interval` iterations), `train_summary.json` (iterations, seconds, it/s, part
counts, joints, peak GPU memory), `cfg_args` and the folder's marker `stage.json`.

Each iteration renders the deformed model in a random training view of the other state o (photometric + depth
loss) and the undeformed model in a random training view of c (anchor; in E-steps also the part prior on the
rendered logits and the kNN smoothness of the logits). E-steps train logits and geometry with soft part weights and
densify; M-steps train the joints (and geometry) with hard weights. Each part keeps the joint type stage 3 gave it;
`--joint_types` only confirms them (the same multiset) and keeps them from switching. Both views are drawn in one
gsplat call (`gaussian_renderer.render_each`: one host synchronisation per iteration instead of two;
`--no-one_render_call` renders them one by one, with the same values).
"""
from __future__ import annotations

import json
import logging
import sys
import time
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor
from tqdm import tqdm

from arguments import CoarseInput, ModelOptions, OptimizationOptions, PipelineOptions, SceneOptions, add_options, \
    build, default_model_path, new_parser, option, parse_joint_types
from gaussian_renderer import render, render_each
from scene import Scene
from scene.articulation import ArticulationModel, blend_weights, deform_surfels
from scene.cameras import STATES, Camera
from scene.contract import (ARTICULATION_NAME, CONFIG_NAME, JOINT_VOXEL_INFO_JSON, JOINT_VOXEL_INFO_NPZ, MODEL_NAME,
                            TRAIN_CHECKPOINT_PREFIX, TRAIN_LOG_NAME, TRAIN_STAGE, TRAIN_SUMMARY_NAME,
                            coarse_iteration_dir, coarse_ply_name, iteration_dir, mask_path, masks_dir,
                            train_checkpoint_path)
from scene.dataset_readers import DatasetError, check_resolution
from scene.gaussian_model import Densifier, GaussianModel, LearningRates, exponential_lr
from scene.model_folder import FolderError, check_folder, claim_folder, clear_outputs
from scene.trained_model import save as save_trained_model
from training.checkpoints import CheckpointError, latest_checkpoint, load_checkpoint, restore_rng_state, \
    restore_surfel_training, rng_state, save_checkpoint, surfel_checkpoint
from training.image_losses import LossWeights, image_loss_terms
from training.loop import FiniteGuard, TrainingDiverged, background, learning_rates
from utils.adam import FusedAdam
from utils.cuda_graphs import GraphedFunction
from utils.io_utils import atomic_path, read_json, write_json
from utils.neighbours import query
from utils.part_losses import knn_indices, knn_smoothness_loss, part_prior_loss
from utils.runtime import pick_device, seed_everything
from utils.timing import memory_note, peak_gpu_memory_gib
from utils.voxel_grid import VoxelGrid

log = logging.getLogger("train")
STAGE2_HINT = "run stage 2 and 3 first: scripts/2_coarse.sh and scripts/3_voxelize.sh (python coarse.py / voxelize.py)"
STAGE3_HINT = "run stage 3 again: scripts/3_voxelize.sh --overwrite (python voxelize.py ... --overwrite)"
STAGE1_HINT = "run stage 1 first: scripts/1_get_mask.sh (python utils/get_mask.py), or pass --lambda_prior 0"
NEVER = 10**9  # an iteration count no run reaches: disables the opacity reset in stage 4


@dataclass(frozen=True)
class RefineConfig(SceneOptions, ModelOptions, OptimizationOptions, PipelineOptions, CoarseInput):
    """Stage 4: EM schedule, part prior, joints and the model folder."""

    densify_from_iter: int = option(3000, "first densification iteration (E phases only)")
    densify_grad_threshold: float = option(1e-3, "screen-space gradient above which a surfel is split or cloned")
    opacity_reset_interval: int = option(0, "iterations between opacity resets (0: never)")
    model_name: str = option(MODEL_NAME, "this stage's model folder inside the scene's output folder (the default "
                                         "--model_path; stage 5 reads it)")
    joint_types: str = option("auto", "auto: each part keeps the joint type stage 3 gave it; or the types as "
                                      "given to stage 3 (e.g. s,r,p: the same multiset, else an error), which "
                                      "keeps them from switching at --prismatic_switch_iter. Give types to stage "
                                      "3 (voxelize.py --joint_types), which decides which part has which")
    em_interval: int = option(4000, "iterations per E or M phase (starts with E)")
    lambda_prior: float = option(0.1, "weight of stage 1's part prior on the rendered part logits (E phases)")
    static_class_weight: float = option(1.2, "weight of the static class in the part prior")
    lambda_smooth: float = option(0.1, "weight of the kNN smoothness of the part logits (E phases)")
    knn: int = option(4, "neighbours of the smoothness term")
    lambda_anchor: float = option(1.0, "weight of the anchor loss of the undeformed model")
    anchor: str = option("initial", "initial: keep the undeformed model close to renders of its frozen initial "
                                    "self (paper); data: fit the canonical state's training images instead",
                         choices=("initial", "data"))
    init_static_logit: float = option(2.0, "initial static logit of every surfel")
    init_part_logit: float = option(3.0, "initial logit of a surfel's stage-3 part (and minus it for the others)")
    init_reach: float = option(2.0, "surfels whose centre lies in no voxel of stage 3 (static or part) start in the "
                                    "class of the nearest one within this many voxels (0: static, as in the paper)")
    prismatic_switch_iter: int = option(10_000, "at this iteration a revolute joint below --prismatic_switch_angle "
                                                "degrees becomes prismatic unless its type was given (to stage 3 or "
                                                "confirmed by --joint_types); 0 disables")
    prismatic_switch_angle: float = option(10.0, "see --prismatic_switch_iter (degrees)")
    joint_lr_init: float = option(1e-3, "joint learning rate at the start")
    joint_lr_final: float = option(1e-5, "joint learning rate at the end")
    logit_lr: float = option(1e-2, "part-logit learning rate")
    checkpoint_iterations: tuple[int, ...] = option((5000, 10_000, 15_000, 20_000),
                                                    "iterations at which the model and a resume checkpoint are "
                                                    "saved (the final iteration always is)")
    log_interval: int = option(500, "iterations between train_log.jsonl records")
    one_render_call: bool = option(True, "on CUDA, draw each iteration's deformed and canonical views in one gsplat "
                                         "call (gaussian_renderer.render_each; the same values as two renders, one "
                                         "host synchronisation instead of two; --no-one_render_call: two renders)")
    overwrite: bool = option(False, "start afresh: delete this stage's outputs in --model_path (only its own "
                                    "files, once the inputs are checked) instead of resuming")
    quiet: bool = option(False, "no progress bar")


# ------------------------------------------------------------------------------------------------------------ inputs
@dataclass
class Stage3Result:
    """What stage 4 starts from: canonical state, per-part voxel sets and initial c -> o transforms."""

    canonical_state: int
    joint_types: list[str]
    transforms: np.ndarray          # (K-1, 4, 4) canonical -> other
    part_voxels: list[np.ndarray]   # K-1 arrays (M_k, 3) int voxel indices in the canonical state
    grid: VoxelGrid                 # the grid those indices refer to
    type_given: list[bool] = field(default_factory=list)  # per part: type given (table or CLI), not guessed
    static_voxels: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))  # (M_0, 3) occupied, static


def coarse_folder(config: CoarseInput | RefineConfig) -> Path:
    """Stage 2/3's iteration folder of this scene."""
    return coarse_iteration_dir(config.output_dir, config.coarse_name, config.coarse_iter)


def read_stage3(folder: Path) -> Stage3Result:
    """Parse `joint_voxel_info.json/.npz` (stage 3); errors name the file and the command that makes it."""
    json_path, npz_path = folder / JOINT_VOXEL_INFO_JSON, folder / JOINT_VOXEL_INFO_NPZ
    for path in (json_path, npz_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; {STAGE2_HINT}")
    info = read_json(json_path, "stage-3 joint_voxel_info")
    try:
        parts = info["parts"]
        canonical = int(info["larger_motion_state"])
        types = [str(part["joint_type"]) for part in parts]
        given = [part.get("type_source") == "given" for part in parts]
        shape = tuple(int(n) for n in info["grid_shape"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{json_path}: not a stage-3 joint_voxel_info file ({err!r}); {STAGE2_HINT}") from err
    try:
        with np.load(npz_path, allow_pickle=False) as arrays:
            transforms = np.asarray(arrays["transforms"], dtype=np.float64)
            voxels = [np.asarray(arrays[f"part_{k}_voxels"]) for k in range(1, len(parts) + 1)]
            static = np.asarray(arrays["static_voxels"]) if "static_voxels" in arrays else np.zeros((0, 3), np.int64)
            origin = np.asarray(arrays["grid_origin"], dtype=np.float64)
            size = float(arrays["voxel_size"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"cannot read stage-3 arrays {npz_path} ({type(err).__name__}: {err}); {STAGE3_HINT}") from err
    if transforms.shape != (len(parts), 4, 4) or not parts:
        raise ValueError(f"{npz_path}: expected transforms of shape ({len(parts)}, 4, 4) for "
                         f"{len(parts)} movable parts, got {transforms.shape}")
    if not (np.isfinite(transforms).all() and np.isfinite(origin).all() and np.isfinite(size) and size > 0):
        raise ValueError(f"{npz_path}: transforms, grid origin or voxel size are not finite; {STAGE3_HINT}")
    return Stage3Result(canonical, types, transforms, voxels, VoxelGrid(origin, size, shape), given, static)


def initial_logits(means: np.ndarray, stage3: Stage3Result, static_logit: float, part_logit: float,
                   reach: float = 0.0) -> Tensor:
    """(N, K) initial part logits: (static_logit, 0, ...) everywhere; surfels whose centre lies in a voxel of movable
    component k get +part_logit for k and -part_logit for every other class. With `reach` > 0 a surfel whose centre
    lies in no occupied voxel (static or part: stage 3's voxels hold its rendered surface, which a surfel centre may
    sit just off) takes the class of the nearest occupied voxel centre within `reach` voxels."""
    num_parts = len(stage3.part_voxels) + 1
    labels = np.zeros(len(means), dtype=np.int64)
    cells = stage3.grid.indices(means)
    for k, voxels in enumerate(stage3.part_voxels, start=1):
        labels[stage3.grid.lookup(stage3.grid.mask(voxels), cells)] = k
    if reach > 0:
        labels = _nearest_voxel_labels(means, cells, labels, stage3, reach)
    logits = np.zeros((len(means), num_parts), dtype=np.float32)
    logits[:, 0] = static_logit
    movable = labels > 0
    logits[movable] = -part_logit
    logits[movable, labels[movable]] = part_logit
    return torch.from_numpy(logits)


def _nearest_voxel_labels(means: np.ndarray, cells: np.ndarray, labels: np.ndarray, stage3: Stage3Result,
                          reach: float) -> np.ndarray:
    """`labels` (N,) with the surfels outside every occupied voxel relabelled by the nearest occupied voxel centre
    within `reach` voxels (0 = static), if any."""
    grid = stage3.grid
    voxels = [stage3.static_voxels, *stage3.part_voxels]
    occupied = np.zeros(len(means), dtype=bool)
    for part_voxels in voxels:
        occupied |= grid.lookup(grid.mask(part_voxels), cells)
    loose = np.flatnonzero(~occupied)
    if len(loose) == 0:
        return labels
    centres = grid.centres(np.concatenate(voxels))
    classes = np.concatenate([np.full(len(part_voxels), k) for k, part_voxels in enumerate(voxels)])
    distance, nearest = query(cKDTree(centres), means[loose], distance_upper_bound=reach * grid.voxel_size)
    found = np.isfinite(distance)
    labels = labels.copy()
    labels[loose[found]] = classes[nearest[found]]
    return labels


def _type_counts(types: list[str] | tuple[str, ...]) -> str:
    counts = Counter(types)
    return ", ".join(f"{counts[name]} {name}" for name in sorted(counts)) or "none"


def resolve_types(cli: str, stage3: Stage3Result) -> tuple[list[str], list[bool]]:
    """Each part's joint type as stage 3 assigned it (stage 4 never assigns types by part index), and per part
    whether the type was given rather than guessed. `--joint_types` must be the same multiset as stage 3's types;
    it then marks every type as given."""
    types = parse_joint_types(cli)
    if types is None:
        return stage3.joint_types, stage3.type_given or [False] * len(stage3.joint_types)
    if Counter(types) != Counter(stage3.joint_types):
        raise ValueError(f"--joint_types {cli!r} ({_type_counts(types)}) is not what stage 3 assigned to its "
                         f"{len(stage3.joint_types)} movable parts ({_type_counts(stage3.joint_types)}). Stage 4 takes "
                         f"each part's type from stage 3: give the types to stage 3 (python voxelize.py ... "
                         f"--joint_types {cli} --overwrite, or JOINT_TYPES={cli} bash scripts/3_voxelize.sh "
                         "--overwrite), then run stage 4 without --joint_types")
    return stage3.joint_types, [True] * len(types)


# ------------------------------------------------------------------------------------------------------ refinement
class Refinement:
    """The EM optimisation: canonical surfels with part logits, the articulation, their optimisers and schedule."""

    def __init__(self, config: RefineConfig, scene: Scene, gaussians: GaussianModel,
                 articulation: ArticulationModel, canonical: int, device: torch.device,
                 type_given: list[bool] | None = None) -> None:
        self.config, self.scene, self.device = config, scene, device
        self.type_given = type_given or [False] * (articulation.num_parts - 1)
        self.gaussians, self.articulation, self.canonical = gaussians, articulation, canonical
        self.other = 1 - canonical
        self.cams_c, self.cams_o = scene.train_cameras(canonical), scene.train_cameras(self.other)
        # one region count for every view (the largest) gives the part prior one graph signature; the extra
        # regions are empty, hence never confident, and change nothing
        self.num_regions = max([int(cam.mask.max()) + 1 for cam in self.cams_c if cam.mask is not None], default=1)
        gaussians.setup_optimizers(*self._optimizer_settings())
        self.densifier = Densifier(
            gaussians, scene_scale=scene.extent, refine_start=config.densify_from_iter,
            refine_stop=config.densify_until_iter, refine_every=config.densification_interval,
            grad_threshold=config.densify_grad_threshold, reset_every=config.opacity_reset_interval or NEVER,
        )
        self.joint_optimizer = self._joint_optimizer()
        self.anchors = self._anchor_targets() if config.anchor == "initial" else None
        self.pseudo_depth = None if all(cam.depth is not None for cam in self.cams_o) else self._coarse_depths()
        self._neighbours: Tensor | None = None
        self.dropped_steps = torch.zeros((), dtype=torch.int64, device=device)
        # one per render of a step: a graphed loss holds one call's buffers until the backward
        self.other_loss, self.canonical_loss = (GraphedFunction(partial(image_loss_terms, weights=LossWeights.of(config)),
                                                                enabled=config.cuda_graphs) for _ in range(2))
        # the surfel count changes with densification (E phase), the weights' requires_grad with the phase
        self.deformation = GraphedFunction(_deformed, enabled=config.cuda_graphs, max_graphs=2)
        self.part_prior = GraphedFunction(partial(_part_prior, static_weight=config.static_class_weight,
                                                  num_regions=self.num_regions),
                                          enabled=config.cuda_graphs)

    def _joint_optimizer(self) -> FusedAdam:
        """Adam for the joints: one gsplat kernel per tensor (torch's Adam costs about 0.5 ms of host time a step)."""
        return FusedAdam(self.articulation.parameters(), lr=self.config.joint_lr_init)

    @torch.no_grad()
    def _render_targets(self, model: GaussianModel, cameras: list[Camera]) -> list[dict[str, Tensor]]:
        """Frozen renders of `model` in `cameras`: RGB over black and depth (0 where alpha <= 0.5)."""
        black = torch.zeros(3, device=self.device)
        targets = []
        for cam in cameras:
            out = render(cam, model, black, with_features=False, backend=self._backend(),
                         depth_ratio=self.config.depth_ratio)
            depth = torch.where(out["alpha"] > 0.5, out["depth"], torch.zeros_like(out["depth"]))
            targets.append({"render": out["render"], "depth": depth})
        return targets

    def _anchor_targets(self) -> list[dict[str, Tensor]]:
        """Renders of the initial model in every canonical training view (the paper's anchor)."""
        return self._render_targets(self.gaussians, self.cams_c)

    def _coarse_depths(self) -> list[Tensor]:
        """Depth renders of the other state's coarse model: the depth target when the dataset has no depth."""
        path = coarse_folder(self.config) / coarse_ply_name(self.other)
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; {STAGE2_HINT}")
        model = GaussianModel.load_ply(path, self.device)
        return [target["depth"] for target in self._render_targets(model, self.cams_o)]

    def _backend(self) -> str | None:
        return self.config.backend_name

    def phase(self, iteration: int) -> str:
        """'E' (logits, soft weights, densify) or 'M' (joints, hard weights); phases alternate every em_interval."""
        return "E" if ((iteration - 1) // self.config.em_interval) % 2 == 0 else "M"

    def neighbours(self) -> Tensor:
        """kNN graph of the surfel centres, rebuilt whenever densification changed the surfel count."""
        if self._neighbours is None or self._neighbours.shape[0] != self.gaussians.num_points:
            self._neighbours = knn_indices(self.gaussians.get_xyz, self.config.knn)
        return self._neighbours

    def step(self, iteration: int, generator: torch.Generator) -> dict[str, Tensor]:
        """One optimisation step; returns the (detached) loss terms."""
        config, g = self.config, self.gaussians
        e_step = self.phase(iteration) == "E"
        g.update_learning_rate(iteration)
        if e_step:
            g.unfreeze("features")
        else:
            g.freeze("features")
        for group in self.joint_optimizer.param_groups:
            group["lr"] = exponential_lr(iteration, config.joint_lr_init, config.joint_lr_final, config.iterations)

        terms: dict[str, Tensor] = {}
        # (a, b) the deformed model in a view of the other state, (c, d) the undeformed one in a view of c
        i = int(torch.randint(len(self.cams_o), (1,), generator=generator))
        cam = self.cams_o[i]
        bg = background(config.random_bg_color, config.white_background, self.device, generator)
        j = int(torch.randint(len(self.cams_c), (1,), generator=generator))
        cam_c = self.cams_c[j]
        use_prior = e_step and config.lambda_prior > 0
        if self.anchors is not None:
            bg_c = torch.zeros(3, device=self.device)
            target, target_depth = {"target": self.anchors[j]["render"]}, self.anchors[j]["depth"]
        else:
            bg_c = background(config.random_bg_color, config.white_background, self.device, generator)
            target, target_depth = {"image": cam_c.image, "image_alpha": cam_c.alpha, "bg": bg_c}, cam_c.depth
        part_q, part_t = self.articulation.part_transforms()
        means, quats = self.deformation({"part_q": part_q, "part_t": part_t, "means": g.get_xyz,
                                         "rotations": g.params["quats"],
                                         "weights": blend_weights(g.get_features, hard=not e_step)})
        out, out_c = self._render_pair([cam, cam_c], torch.stack([bg, bg_c]), means, quats, use_prior)
        depth_target = cam.depth if self.pseudo_depth is None else self.pseudo_depth[i]
        terms["photo"], terms["depth"] = self.other_loss({
            "render": out["render"], "image": cam.image, "image_alpha": cam.alpha, "bg": bg, "depth": out["depth"],
            "gt_depth": depth_target})[:2]

        depth = {} if target_depth is None else {"depth": out_c["depth"], "gt_depth": target_depth}
        anchor = self.canonical_loss({"render": out_c["render"], **target, **depth})
        terms["anchor"] = config.lambda_anchor * anchor[:2].sum()
        if use_prior:
            terms["prior"] = config.lambda_prior * self.part_prior(
                {"logits": out_c["features"], "alpha": out_c["alpha"], "regions": cam_c.mask})
        if e_step and config.lambda_smooth > 0:
            terms["smooth"] = config.lambda_smooth * knn_smoothness_loss(g.get_features, self.neighbours())

        loss = sum(terms.values())
        densify = e_step and iteration < config.densify_until_iter
        if densify:
            self.densifier.pre_backward(iteration, out_c["info"])
        loss.backward()
        self._drop_non_finite_gradients(loss, out_c["info"])
        if densify:
            self.densifier.post_backward(iteration, out_c["info"])
            if iteration % config.densification_interval == 0:
                self._neighbours = None  # the surfels may have been split, cloned or pruned
        g.step_optimizers()
        if not e_step:
            self.joint_optimizer.step()
        self.joint_optimizer.zero_grad(set_to_none=True)
        terms["total"] = loss
        return {name: value.detach() for name, value in terms.items()}

    def _render_pair(self, cameras: list[Camera], bgs: Tensor, means: Tensor, quats: Tensor, with_prior: bool
                     ) -> tuple[dict, dict]:
        """The deformed model (`means` (N, 3), `quats` (N, 4)) from cameras[0] and the canonical one, with its part
        logits when `with_prior`, from cameras[1], over `bgs` (2, 3): in one gsplat call unless --no-one_render_call."""
        options = dict(with_surf_normal=False, backend=self._backend(), depth_ratio=self.config.depth_ratio)
        g = self.gaussians
        if self.config.one_render_call:
            out, out_c = render_each(cameras, [g, g], bgs, means=[means, None], rotations=[quats, None],
                                     with_features=[False, with_prior], **options)
        else:
            out = render(cameras[0], g, bgs[0], means=means, rotations=quats, with_features=False, **options)
            out_c = render(cameras[1], g, bgs[1], with_features=with_prior, **options)
        return out, out_c

    def _drop_non_finite_gradients(self, loss: Tensor, info: dict) -> None:
        """Zero this step's gradients when the loss is not finite, and any non-finite gradient entry, without a host
        synchronisation; the dropped steps are counted in `self.dropped_steps` (reported in the log). A rare
        degenerate render then costs one step instead of the run; non-finite parameters still stop training."""
        finite = torch.isfinite(loss.detach())
        self.dropped_steps = self.dropped_steps + (~finite).to(torch.int64)
        grads = [p.grad for p in [*self.gaussians.params.values(), *self.articulation.parameters()]
                 if p.grad is not None]
        screen = info.get("gradient_2dgs")
        if screen is not None and screen.grad is not None:
            grads.append(screen.grad)
        for grad in grads:
            torch.nan_to_num_(grad, nan=0.0, posinf=0.0, neginf=0.0).mul_(finite)

    def switch_small_revolute_joints(self) -> list[int]:
        """Make every revolute joint whose angle is below the threshold prismatic (about its part's centroid), unless its
        type was given (per-scene table or command line) rather than guessed by stage 3."""
        switched = []
        parts = self.part_ids()
        for k in range(1, self.articulation.num_parts):
            joint = self.articulation.joint(k)
            if (self.type_given[k - 1] or joint["type"] != "revolute"
                    or abs(joint["motion"]) >= self.config.prismatic_switch_angle):
                continue
            members = parts == k
            centre = self.gaussians.get_xyz[members].mean(0) if members.any() else self.gaussians.get_xyz.mean(0)
            self.articulation.switch_to_prismatic(k, centre.detach().double().cpu().numpy())
            switched.append(k)
        if switched:
            self.joint_optimizer = self._joint_optimizer()
        return switched

    def parameter_checksum(self) -> Tensor:
        """A scalar that is finite exactly when the surfel centres, logits and joints are (for the divergence guard)."""
        g = self.gaussians
        return g.params["means"].detach().sum() + g.params["features"].detach().sum() + \
            sum(p.detach().sum() for p in self.articulation.parameters())

    def part_ids(self) -> Tensor:
        """(N,) hard part assignment."""
        return self.gaussians.get_features.argmax(dim=1)

    def status(self) -> dict:
        """Part counts and joints (canonical -> other), for logs."""
        counts = torch.bincount(self.part_ids(), minlength=self.articulation.num_parts).tolist()
        return {"gaussians": self.gaussians.num_points, "part_counts": counts, "dropped_steps": int(self.dropped_steps),
                "joints": [self.articulation.joint(k) for k in range(1, self.articulation.num_parts)]}

    # -------------------------------------------------------------------------------------------------- checkpoints
    def checkpoint(self, iteration: int) -> dict:
        """Everything needed to resume: surfels, optimiser and densifier state, joints, schedule position."""
        return {
            "iteration": iteration,
            **surfel_checkpoint(self.gaussians, self.densifier),
            "articulation": {"prismatic": self.articulation.prismatic, "quats": self.articulation.quats.detach(),
                             "trans": self.articulation.trans.detach()},
            "joint_optimizer": self.joint_optimizer.state_dict(),
            "dropped_steps": self.dropped_steps.detach().cpu(),
            # the smoothness term's kNN graph is rebuilt only when the surfel count changes: part of the state
            **({} if self._neighbours is None else {"neighbours": self._neighbours.detach().cpu()}),
        }

    def restore(self, state: dict) -> int:
        """Load a `checkpoint` dict; returns its iteration."""
        g = self.gaussians
        with torch.no_grad():
            for name, value in state["params"].items():
                g.params[name] = torch.nn.Parameter(value.to(self.device).clone())
            self.articulation.prismatic.copy_(state["articulation"]["prismatic"])
            self.articulation.quats.copy_(state["articulation"]["quats"])
            self.articulation.trans.copy_(state["articulation"]["trans"])
        g.active_sh_degree = int(state["active_sh_degree"])
        g.setup_optimizers(*self._optimizer_settings())
        restore_surfel_training(g, self.densifier, state)
        self.joint_optimizer = self._joint_optimizer()
        self.joint_optimizer.load_state_dict(state["joint_optimizer"])
        if "dropped_steps" in state:
            self.dropped_steps = state["dropped_steps"].to(self.device)
        self._neighbours = state["neighbours"].to(self.device) if "neighbours" in state else None
        return int(state["iteration"])

    def _optimizer_settings(self) -> tuple[LearningRates, float, int]:
        return learning_rates(self.config, features=self.config.logit_lr), self.scene.extent, self.config.iterations


def _deformed(inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """`deform_surfels` of named tensors (the body `Refinement` replays from a CUDA graph)."""
    return deform_surfels(inputs["part_q"], inputs["part_t"], inputs["means"], inputs["rotations"], inputs["weights"])


def _part_prior(inputs: dict[str, Tensor], static_weight: float, num_regions: int) -> Tensor:
    """`part_prior_loss` of a rendered logit map, its alpha and the view's regions (replayed from a CUDA graph)."""
    return part_prior_loss(inputs["logits"], inputs["alpha"], inputs["regions"], static_weight=static_weight,
                           num_regions=num_regions)


# ------------------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> RefineConfig:
    """The stage-4 settings; `model_path` is resolved to its default when empty."""
    parser = new_parser(__doc__.split("\n\n")[0])
    add_options(parser, RefineConfig)
    args = parser.parse_args(argv)
    if not args.scene_name:
        parser.error("--scene_name is required")
    if args.iterations < 1 or args.em_interval < 1 or args.log_interval < 1:
        parser.error("--iterations, --em_interval and --log_interval must be positive")
    try:
        check_resolution(args.resolution)
        parse_joint_types(args.joint_types)
    except ValueError as err:
        parser.error(str(err))
    config = build(RefineConfig, args)
    return replace(config, model_path=default_model_path(config, config.model_path, config.model_name))


def load_model(config: RefineConfig, device: torch.device
               ) -> tuple[GaussianModel, ArticulationModel, int, list[bool]]:
    """The canonical coarse surfels with initial part logits, the initial articulation (both on `device`), the
    canonical state and per part whether its joint type was given."""
    folder = coarse_folder(config)
    stage3 = read_stage3(folder)
    ply = folder / coarse_ply_name(stage3.canonical_state)
    if not ply.is_file():
        raise FileNotFoundError(f"{ply} is missing; {STAGE2_HINT}")
    coarse = GaussianModel.load_ply(ply, "cpu")
    params = {name: p.detach() for name, p in coarse.params.items() if name != "features"}
    params["features"] = initial_logits(coarse.get_xyz.detach().numpy(), stage3, config.init_static_logit,
                                        config.init_part_logit, config.init_reach)
    params = {name: value.to(device).requires_grad_() for name, value in params.items()}
    gaussians = GaussianModel(params, coarse.max_sh_degree, coarse.active_sh_degree)
    types, given = resolve_types(config.joint_types, stage3)
    articulation = ArticulationModel(types, stage3.transforms).to(device)
    return gaussians, articulation, stage3.canonical_state, given


def check_masks(scene: Scene, canonical: int, config: RefineConfig) -> None:
    """The part prior needs stage 1's label maps for every canonical training view."""
    if config.lambda_prior <= 0:
        return
    missing = [cam.image_name for cam in scene.train_cameras(canonical) if cam.mask is None]
    if missing:
        first = mask_path(masks_dir(config.output_dir), canonical, "train", missing[0])
        raise FileNotFoundError(f"{len(missing)} stage-1 label maps of the {STATES[canonical]} training views are "
                                f"missing (e.g. {first}); {STAGE1_HINT}")


def final_iteration_done(model_path: Path, iterations: int) -> bool:
    return (iteration_dir(model_path, iterations) / ARTICULATION_NAME).is_file()


def save(refinement: Refinement, model_path: Path, iteration: int, generator: torch.Generator) -> None:
    """The model contract and a resume checkpoint (with every random state) for `iteration`."""
    save_trained_model(model_path, iteration, refinement.gaussians, refinement.articulation, refinement.canonical)
    save_checkpoint(train_checkpoint_path(model_path, iteration),
                    {**refinement.checkpoint(iteration), "rng": rng_state(generator)})


def log_status(refinement: Refinement, iteration: int, terms: dict[str, Tensor], log_path: Path) -> dict:
    """Append one JSON line (phase, loss terms, part counts, joints) to `train_log.jsonl` and return it."""
    record = {"iteration": iteration, "phase": refinement.phase(iteration),
              "loss": {name: float(value) for name, value in terms.items()}, **refinement.status()}
    with open(log_path, "a") as handle:
        handle.write(json.dumps(record) + "\n")
    joints = "; ".join(f"{j['type'][0]} {j['motion']:.3f}" for j in record["joints"])
    log.info("it %d %s loss %.4f parts %s joints %s", iteration, record["phase"], record["loss"]["total"],
             record["part_counts"], joints)
    return record


def truncate_log(log_path: Path, iteration: int) -> None:
    """Keep only the records of `train_log.jsonl` up to `iteration` (a resumed run writes the later ones again)."""
    if not log_path.is_file():
        return
    kept = []
    for number, line in enumerate(log_path.read_text().splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break  # a line cut short when the run was killed: it and everything after it go
        if not isinstance(record, dict) or not isinstance(record.get("iteration"), int):
            raise ValueError(f"{log_path}: line {number} is not a stage-4 log record")
        if record["iteration"] <= iteration:
            kept.append(line)
    with atomic_path(log_path) as tmp:
        tmp.write_text("".join(line + "\n" for line in kept))


def resume(refinement: Refinement, model_path: Path, generator: torch.Generator) -> int:
    """Restore the latest checkpoint (and its random states) into `refinement`; its iteration, 0 without one.
    A checkpoint that cannot be read or does not fit the model raises CheckpointError naming it."""
    path = latest_checkpoint(model_path, TRAIN_CHECKPOINT_PREFIX)
    if path is None:
        return 0
    payload = load_checkpoint(path, refinement.device)
    try:
        start = refinement.restore(payload)
        if "rng" in payload:
            restore_rng_state(payload["rng"], generator)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError, IndexError) as err:
        raise CheckpointError(f"checkpoint {path} does not fit this model ({type(err).__name__}: {err}); delete it "
                              "or pass --overwrite to start afresh") from err
    truncate_log(model_path / TRAIN_LOG_NAME, start)
    log.info("resumed from %s", path)
    return start


def train(config: RefineConfig) -> dict:
    """Run (or resume) stage 4 for one scene; returns the summary written to train_summary.json."""
    model_path = Path(config.model_path)
    check_folder(model_path, TRAIN_STAGE)
    if not config.overwrite and final_iteration_done(model_path, config.iterations):
        log.info("%s already has iteration %d; nothing to do (pass --overwrite to retrain)", model_path,
                 config.iterations)
        return read_json(model_path / TRAIN_SUMMARY_NAME, "stage-4 summary")
    device = pick_device(config.data_device)
    generator = seed_everything(config.seed, device)
    gaussians, articulation, canonical, type_given = load_model(config, device)
    scene = Scene(config.scene_dir, config.resolution, device, splits=("train",),
                  mask_dir=masks_dir(config.output_dir), white_background=config.white_background)
    check_masks(scene, canonical, config)
    if config.overwrite:  # the inputs are checked: the old outputs may go
        removed = clear_outputs(model_path, TRAIN_STAGE)
        if removed:
            log.info("--overwrite: deleted %d files and folders of an earlier run in %s", len(removed), model_path)
    claim_folder(model_path, TRAIN_STAGE)
    write_json(model_path / CONFIG_NAME, asdict(config))
    refinement = Refinement(config, scene, gaussians, articulation, canonical, device, type_given)
    start = resume(refinement, model_path, generator)
    checkpoints = set(config.checkpoint_iterations) | {config.iterations}
    guard, log_path = FiniteGuard(), model_path / TRAIN_LOG_NAME
    began = time.perf_counter()
    bar = tqdm(range(start + 1, config.iterations + 1), desc="refine", disable=config.quiet, dynamic_ncols=True)
    terms: dict[str, Tensor] = {}
    for iteration in bar:
        if iteration == config.prismatic_switch_iter:
            for k in refinement.switch_small_revolute_joints():
                log.info("it %d: part %d moved less than %.1f deg; now prismatic", iteration, k,
                         config.prismatic_switch_angle)
        terms = refinement.step(iteration, generator)
        logging_now = iteration % config.log_interval == 0 or iteration == config.iterations
        if logging_now or iteration in checkpoints or iteration % guard.every == 0:
            guard.update(refinement.parameter_checksum())  # non-finite parameters stay so: check here only
            guard.check(iteration)
        if logging_now:
            record = log_status(refinement, iteration, terms, log_path)
            bar.set_postfix(phase=record["phase"], loss=f"{record['loss']['total']:.4f}", n=record["gaussians"])
        if iteration in checkpoints:
            save(refinement, model_path, iteration, generator)
    seconds = time.perf_counter() - began
    done = config.iterations - start
    summary = {"iterations": config.iterations, "resumed_from": start, "seconds": seconds,
               "iterations_per_second": done / seconds if seconds > 0 else None, "canonical_state": canonical,
               "peak_gpu_memory_gib": peak_gpu_memory_gib(device), **refinement.status()}
    write_json(model_path / TRAIN_SUMMARY_NAME, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[train] %(message)s")
    config = parse_args(argv)
    try:
        summary = train(config)
    except TrainingDiverged as err:
        print(f"[train] {err}; the last good checkpoint in {config.model_path} is kept", file=sys.stderr)
        return 3
    except (DatasetError, FolderError, CheckpointError, OSError, ValueError) as err:
        print(f"[train] error: {err}", file=sys.stderr)
        return 2
    joints = ", ".join(f"part {k}: {j['type']} {j['motion']:.3f}" for k, j in enumerate(summary["joints"], 1))
    print(f"[train] {config.scene_name}: {summary['gaussians']} surfels, parts {summary['part_counts']}, {joints} "
          f"(canonical -> other), {summary['seconds']:.0f} s{memory_note(summary.get('peak_gpu_memory_gib'))} "
          f"-> {config.model_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
