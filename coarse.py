"""Stage 2: one 2D Gaussian surfel model per joint state, and which state has the larger motion.

    python coarse.py --dataset gear --subset synthetic --scene_name cabinet [--iterations 30000] [--resolution 400]

Reads `<source_path>/<dataset>/<subset>/<scene_name>/` (validated on load, scene/dataset_readers.py) and writes under
`--model_path` (default `<output_root>/<dataset>/<subset>/<scene_name>/<coarse_name>`; the file names are
scene/contract.py's):

    stage.json, cfg_args          the folder's owner (stage 2) and the settings of the last invocation
    chkpnt_state<s>_<N>.pth       each state's latest resumable state (plain tensors and dicts; weights_only=True)
    init/point_cloud_<s>.ply      the initial point cloud of a state, when the dataset ships none: its training depth
                                  back-projected, or without depth random points inside the silhouettes
                                  (--no-init_from_pcd starts from random points where the views look instead)
    point_cloud/iteration_<N>/    point_cloud_0.ply, point_cloud_1.ply (start, end), surface_points_0/1.ply (each
                                  model's rendered surface: median depth of the training views where alpha > 0.5,
                                  back-projected; stage 3's input and the larger-motion test's), and
                                  larger_motion_state.txt (0 or 1), at every --save_iterations value reached and at
                                  the final iteration
    coarse_summary.json           PSNR and depth error per state and split, Gaussian counts, wall time, it/s, seconds
                                  per phase (load, initialisation, iterations, checkpoints and saves, larger-motion
                                  test, evaluation), peak GPU memory (GiB; null on the CPU)

The two states' models are independent but train in one loop: each iteration renders one random training view of each
state against its image composited over a random background (--no-random_bg_color: black or --white_background), both
in one gsplat call on CUDA (`gaussian_renderer.render_stacked`: one tile binning and one backward for both), then steps
each state's Adam and densification. Each state draws its views and backgrounds from its own generator and restarts
from its own latest checkpoint; a state whose checkpoint is ahead waits until the other catches up. A run whose final
outputs exist exits at once. `--overwrite` deletes this stage's own files (scene/model_folder.py) once the inputs are
checked, and starts afresh. After densification ends, the surfels that the opacity binarisation drives below the
pruning opacity keep being removed (`--no-prune_transparent`: only while densifying). Only the progress bar and NaN
check (every PROGRESS_EVERY iterations), checkpoints and saves read values back from the device; the image losses
replay as one captured CUDA graph (utils/cuda_graphs.py). A NaN/inf loss stops the run (exit 3) and keeps the last
checkpoints, which are only written after such a check.
"""
from __future__ import annotations

import logging
import re
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from arguments import VOXEL_SIZE, ModelOptions, OptimizationOptions, PipelineOptions, SceneOptions, add_options, \
    build, default_model_path, new_parser, option
from gaussian_renderer import render, render_stacked
from scene import InitialPoints, Scene, initial_point_cloud
from scene.camera_points import backproject_depth, random_points_in_views
from scene.cameras import Camera
from scene.contract import (COARSE_NAME, COARSE_STAGE, COARSE_SUMMARY_NAME, CONFIG_NAME, LARGER_MOTION_NAME,
                            coarse_checkpoint_prefix, coarse_ply_name, initial_point_cloud_path, iteration_dir,
                            surface_points_name)
from scene.dataset_readers import SPLITS, DatasetError, check_resolution, transforms_path
from scene.gaussian_model import Densifier, GaussianModel
from scene.model_folder import FolderError, check_folder, claim_folder, clear_outputs
from training.checkpoints import (CheckpointError, latest_checkpoint, load_checkpoint, restore_rng_state,
                                  restore_surfel_training, rng_state, save_checkpoint, surfel_checkpoint)
from training.image_losses import LossWeights, image_loss_terms
from training.loop import FiniteGuard, TrainingDiverged, background, learning_rates
from utils.cuda_graphs import GraphedFunction
from utils.image_utils import psnr
from utils.io_utils import read_json, write_json, write_text
from utils.loss_utils import opacity_binarisation_loss
from utils.motion_state import motion_excesses
from utils.point_cloud import read_point_ply, voxel_downsample, write_point_ply
from utils.runtime import pick_device, seed_everything
from utils.timing import PhaseTimer, memory_note, peak_gpu_memory_gib

log = logging.getLogger("coarse")

STATES = (0, 1)
PROGRESS_EVERY = 50  # iterations between progress-bar updates and NaN checks (each one host sync)
OPAQUE = 0.5  # opacity from which a Gaussian's centre counts as surface for the larger-motion test
INIT_OPACITY = 0.1


@dataclass(frozen=True)
class CoarseConfig(SceneOptions, ModelOptions, OptimizationOptions, PipelineOptions):
    """Stage 2: checkpoints, initialisation and the larger-motion test."""

    random_bg_color: bool = option(True, "composite training images over a random background each iteration "
                                         "(--no-random_bg_color: black, or white with --white_background)")
    coarse_name: str = option(COARSE_NAME, "this stage's model folder inside the scene's output folder (the "
                                           "default --model_path)")
    checkpoint_interval: int = option(5000, "iterations between checkpoints (the latest one is kept; also saved at "
                                            "the end)")
    motion_voxel_size: float = option(VOXEL_SIZE, "voxel edge of the larger-motion-state test (scene units)")
    init_voxel_size: float = option(VOXEL_SIZE, "voxel edge of the initial point cloud derived from depth or "
                                                "silhouettes (scene units)")
    prune_transparent: bool = option(True, "after densification ends, keep removing surfels whose opacity fell "
                                           "below 0.005 every --densification_interval iterations (the opacity "
                                           "binarisation drives most surfels there; they render nothing); "
                                           "--no-prune_transparent prunes only while densifying")
    init_from_pcd: bool = option(True, "start each state from its point cloud (the dataset's "
                                       "point_cloud_<state>.ply, else made from depth, or from the silhouettes "
                                       "without depth); --no-init_from_pcd starts from --random_init_points random "
                                       "points where at least half of the training views look, with random "
                                       "colours (3DGS's random initialisation)")
    random_init_points: int = option(100_000, "how many random points --no-init_from_pcd starts from")
    overwrite: bool = option(False, "start afresh: delete this stage's outputs and checkpoints in --model_path "
                                    "(only its own files, once the inputs are checked) instead of resuming")


@dataclass
class StateRun:
    """Everything that trains one joint state: its model, densifier, training cameras and random generator (views
    and backgrounds), the iteration it (re)starts after and the epoch's view order."""

    state: int
    model: GaussianModel
    densifier: Densifier
    cameras: list[Camera]
    generator: torch.Generator
    start: int = 0
    views: list[int] = field(default_factory=list)

    def next_camera(self) -> Camera:
        """A random training view; every view once per epoch (3DGS's shuffled stack)."""
        if not self.views:
            self.views = torch.randperm(len(self.cameras), generator=self.generator).tolist()
        return self.cameras[self.views.pop()]


# ------------------------------------------------------------------------------------------------------ arguments

def parse_args(argv: list[str] | None) -> CoarseConfig:
    """The stage-2 settings; `model_path` is resolved to its default when empty."""
    parser = new_parser("Stage 2: coarse 2D Gaussian surfels of both joint states.")
    add_options(parser, CoarseConfig)
    args = parser.parse_args(argv)
    if not args.scene_name:
        parser.error("--scene_name is required")
    if args.iterations < 1 or args.checkpoint_interval < 1 or args.random_init_points < 2:
        parser.error("--iterations and --checkpoint_interval must be positive, --random_init_points at least 2")
    try:
        check_resolution(args.resolution)
    except ValueError as err:
        parser.error(str(err))
    config = build(CoarseConfig, args)
    return replace(config, model_path=default_model_path(config, config.model_path, config.coarse_name))


# ---------------------------------------------------------------------------------------------------- file layout

def is_done(model_path: Path, iterations: int) -> bool:
    """Whether the final PLYs, the larger-motion state and the summary of `iterations` exist."""
    folder = iteration_dir(model_path, iterations)
    names = (coarse_ply_name(0), coarse_ply_name(1), LARGER_MOTION_NAME)
    if not all((folder / name).is_file() for name in names) or not (model_path / COARSE_SUMMARY_NAME).is_file():
        return False
    try:
        return read_json(model_path / COARSE_SUMMARY_NAME, "stage-2 summary").get("iterations") == iterations
    except ValueError:
        return False


def available_splits(folder: Path) -> tuple[str, ...]:
    """("train", "test") when both states have test transforms, else ("train",)."""
    has_test = all(transforms_path(folder, state, "test").is_file() for state in STATES)
    return SPLITS if has_test else ("train",)


# --------------------------------------------------------------------------------------------------- construction

def initial_points(scene: Scene, state: int, config: CoarseConfig) -> InitialPoints:
    """A state's initial points: its point cloud (shipped, else derived from depth or silhouettes; checked, errors
    name the file) or with --no-init_from_pcd --random_init_points random points where the state's cameras look."""
    if config.init_from_pcd:
        return initial_point_cloud(scene, state, config.init_voxel_size)
    points, colours = random_points_in_views(scene.train_cameras(state), config.random_init_points,
                                             seed=config.seed + state)
    return InitialPoints(points, colours, "random points where the training views look", shipped=False)


def initial_model(start: InitialPoints, state: int, config: CoarseConfig, device: torch.device,
                  model_path: Path | None = None) -> GaussianModel:
    """Surfels (opacity 0.1, scale from the 3 nearest neighbours) at a state's initial points; points the dataset
    did not ship are saved to `<model_path>/init/` first."""
    if not start.shipped and model_path is not None:
        path = initial_point_cloud_path(model_path, state)
        write_point_ply(path, start.points, start.colours)
        log.info("state %d: %d initial points from %s -> %s", state, len(start.points), start.source, path)
    else:
        log.info("state %d: %d initial points from %s", state, len(start.points), start.source)
    return GaussianModel.from_point_cloud(start.points, start.colours, sh_degree=config.sh_degree,
                                          init_opacity=INIT_OPACITY, device=device, seed=config.seed + state)


def make_run(state: int, model: GaussianModel, scene: Scene, config: CoarseConfig, start: int = 0) -> StateRun:
    """Optimisers (position lr scaled by the camera extent), densifier and generator (seed + state) of one state's
    model, which starts after iteration `start`."""
    model.setup_optimizers(learning_rates(config), spatial_scale=scene.extent, max_steps=config.iterations)
    densifier = Densifier(model, scene_scale=scene.extent, refine_start=config.densify_from_iter,
                          refine_stop=config.densify_until_iter, refine_every=config.densification_interval,
                          grad_threshold=config.densify_grad_threshold, reset_every=config.opacity_reset_interval,
                          prune_after_stop=config.prune_transparent)
    generator = torch.Generator().manual_seed(config.seed + state)
    return StateRun(state, model, densifier, scene.train_cameras(state), generator, start)


# ------------------------------------------------------------------------------------------------------- training

def image_loss_function(config: CoarseConfig) -> GraphedFunction:
    """The image terms of all states' renders at once (`image_loss_terms` of stacked maps), replayed from CUDA
    graphs."""
    return GraphedFunction(partial(image_loss_terms, weights=LossWeights.of(config)), enabled=config.cuda_graphs)


def image_maps(batch: dict, cameras: list[Camera], bgs: Tensor, config: CoarseConfig,
               iteration: int) -> dict[str, Tensor]:
    """The maps (S, ...) of `image_loss_terms` for the stage-2 terms active at `iteration`: the renders
    `batch` of `cameras` (`render_stacked`) over backgrounds `bgs` (S, 3) and their targets. A view without depth
    gets zero target depth, which the depth term skips."""
    maps = {"render": batch["render"], "image": torch.stack([cam.image for cam in cameras]),
            "image_alpha": torch.stack([cam.alpha for cam in cameras]), "bg": bgs}
    if config.lambda_depth > 0 and any(cam.depth is not None for cam in cameras):
        maps |= {"depth": batch["depth"], "gt_depth": torch.stack([
            torch.zeros_like(cam.alpha) if cam.depth is None else cam.depth for cam in cameras])}
    if config.lambda_normal > 0 and iteration > config.normal_from_iter:
        maps |= {"rend_normal": batch["rend_normal"], "alpha": batch["alpha"], "depth": batch["depth"],
                 "viewmat": batch["viewmats"], "K": batch["Ks"]}
    if config.lambda_dist > 0 and iteration > config.dist_from_iter:
        maps["rend_dist"] = batch["rend_dist"]
    return maps


def state_losses(runs: list[StateRun], batch: dict, cameras: list[Camera], bgs: Tensor, config: CoarseConfig,
                 iteration: int, image_loss: GraphedFunction) -> Tensor:
    """The stage-2 loss of each run's render in `batch` (`render_stacked` of `cameras` over `bgs`): (S,)."""
    losses = image_loss(image_maps(batch, cameras, bgs, config, iteration)).sum(dim=1)
    if config.lambda_opacity > 0 and iteration > config.opacity_from_iter:
        opacity = torch.stack([opacity_binarisation_loss(run.model.get_opacity) for run in runs])
        losses = losses + config.lambda_opacity * opacity
    return losses


def train_step(runs: list[StateRun], iteration: int, config: CoarseConfig, image_loss: GraphedFunction) -> Tensor:
    """One iteration of each run: render one random view of every state (one call), backpropagate the sum of their
    losses, densify, step Adam; returns the detached losses (S,)."""
    cameras, bgs = [], []
    for run in runs:
        run.model.update_learning_rate(iteration)
        if iteration % config.sh_increase_interval == 0:
            run.model.oneup_sh_degree()
        cameras.append(run.next_camera())
        bgs.append(background(config.random_bg_color, config.white_background, run.model.device, run.generator))
    bgs = torch.stack(bgs)
    batch, infos = render_stacked(cameras, [run.model for run in runs], bgs, with_surf_normal=False,
                                  depth_ratio=config.depth_ratio, backend=config.backend_name)
    losses = state_losses(runs, batch, cameras, bgs, config, iteration, image_loss)
    for run, info in zip(runs, infos):
        run.densifier.pre_backward(iteration, info)
    losses.sum().backward()
    for run, info in zip(runs, infos):
        run.densifier.post_backward(iteration, info)  # grows and prunes when its schedule says so
        run.model.step_optimizers()
    return losses.detach()


def check_finite(runs: list[StateRun], guard: FiniteGuard, iteration: int) -> None:
    """Raise TrainingDiverged if a loss since the last check (`guard`, one entry per state) or a parameter of `runs` is
    NaN/inf (host syncs)."""
    guard.check(iteration)
    for run in runs:
        bad = [name for name, p in run.model.params.items() if not bool(torch.isfinite(p).all())]
        if bad:
            raise TrainingDiverged(f"state {run.state}: parameters {bad} became NaN/inf by iteration {iteration}")


def state_vector(losses: Tensor, active: list[StateRun], runs: list[StateRun]) -> Tensor:
    """The losses (A,) of the `active` runs as a vector over all `runs` (0 for a run that has not started yet, while
    a resumed state catches up with the other)."""
    if len(active) == len(runs):
        return losses
    full = losses.new_zeros(len(runs))
    full[[runs.index(run) for run in active]] = losses
    return full


# ---------------------------------------------------------------------------------------------------- checkpoints

def checkpoint_payload(run: StateRun, iteration: int) -> dict:
    """Plain tensors and dicts (loadable with weights_only=True) that let one state's training continue."""
    return {
        "iteration": iteration,
        "state": run.state,
        "rng": rng_state(run.generator),
        **surfel_checkpoint(run.model, run.densifier),
        "views": torch.tensor(run.views, dtype=torch.int64),
    }


def restore_run(payload: dict, state: int, scene: Scene, config: CoarseConfig, device: torch.device,
                path: Path) -> StateRun:
    """Rebuild one state's run (model, Adam moments, densifier statistics, view order, RNGs) from a checkpoint."""
    try:
        if payload["state"] != state:
            raise ValueError(f"it holds state {payload['state']}, not {state}")
        params = {name: value.to(device).requires_grad_() for name, value in payload["params"].items()}
        model = GaussianModel(params, config.sh_degree, active_sh_degree=int(payload["active_sh_degree"]))
        run = make_run(state, model, scene, config, start=payload["iteration"])
        restore_surfel_training(model, run.densifier, payload)
        run.views = payload["views"].tolist()
        restore_rng_state(payload["rng"], run.generator)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint {path} does not match this model ({type(err).__name__}: {err}); "
                              "pass --overwrite to start afresh") from err
    return run


def write_checkpoint(model_path: Path, run: StateRun, iteration: int) -> Path:
    """Save this state's checkpoint of `iteration`, then delete its older ones (the new one is complete)."""
    prefix = coarse_checkpoint_prefix(run.state)
    path = model_path / f"{prefix}{iteration}.pth"
    save_checkpoint(path, checkpoint_payload(run, iteration))
    for old in model_path.glob(f"{prefix}*.pth"):
        if old != path and re.fullmatch(re.escape(prefix) + r"\d+\.pth", old.name):
            old.unlink()
    return path


# -------------------------------------------------------------------------------------------------------- outputs

def fallback_centres(models: list[GaussianModel]) -> list[np.ndarray]:
    """Per state, (M, 3) centres of the Gaussians with opacity >= OPAQUE; all centres of both states (the same rule
    for both) with a warning when a state has none (a very short run)."""
    with torch.no_grad():
        keep = [model.get_opacity >= OPAQUE for model in models]
        if all(bool(k.any()) for k in keep):
            return [m.get_xyz[k].cpu().numpy().astype(np.float64) for m, k in zip(models, keep)]
        log.warning("a state has no Gaussian with opacity >= %.1f; the larger-motion test uses all centres "
                    "(train longer for a reliable answer)", OPAQUE)
        return [m.get_xyz.detach().cpu().numpy().astype(np.float64) for m in models]


@torch.no_grad()
def rendered_surface(model: GaussianModel, cameras: list[Camera], voxel_size: float,
                     backend: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Points (M, 3) and colours (M, 3) of the model's rendered surface: the median depth of every training view,
    back-projected where the rendered alpha exceeds 0.5, voxel-downsampled at `voxel_size`.

    Unlike the surfel centres this does not depend on how opacity is spread over the surfels (a model that renders
    well can hold its surface in many half-transparent surfels, leaving few centres above an opacity threshold).
    """
    black = torch.zeros(3, device=model.device)
    renders = []
    for cam in cameras:
        out = render(cam, model, black, with_features=False, backend=backend, depth_ratio=1.0)
        renders.append(replace(cam, image=out["render"], alpha=out["alpha"], depth=out["depth_median"]))
    return voxel_downsample(*backproject_depth(renders), voxel_size)


def save_state_iteration(model_path: Path, run: StateRun, iteration: int, voxel_size: float,
                         backend: str | None) -> None:
    """Write one state's PLY and its rendered surface (`surface_points_<state>.ply`, stage 3's input)."""
    folder = iteration_dir(model_path, iteration)
    run.model.save_ply(folder / coarse_ply_name(run.state))
    write_point_ply(folder / surface_points_name(run.state),
                    *rendered_surface(run.model, run.cameras, voxel_size / 2, backend))


def state_iteration_saved(model_path: Path, state: int, iteration: int) -> bool:
    """Whether one state's PLY and rendered surface of `iteration` exist."""
    folder = iteration_dir(model_path, iteration)
    return all((folder / name(state)).is_file() for name in (coarse_ply_name, surface_points_name))


def decide_motion_state(folder: Path, voxel_size: float, device: torch.device) -> dict:
    """Write `larger_motion_state.txt` of a saved iteration folder (last, so that its presence means the folder is
    complete) from both states' rendered surfaces (their opaque surfel centres when a surface is empty)."""
    points = [read_point_ply(folder / surface_points_name(state))[0].astype(np.float64) for state in STATES]
    surfaces = all(len(p) for p in points)
    if not surfaces:
        points = fallback_centres([GaussianModel.load_ply(folder / coarse_ply_name(s), device) for s in STATES])
    excess = motion_excesses(points[0], points[1], voxel_size)
    larger = int(excess[1] > excess[0])
    write_text(folder / LARGER_MOTION_NAME, f"{larger}\n")
    log.info("saved %s (larger motion state %d; excess %.3f vs %.3f)", folder, larger, *excess)
    return {"larger_motion_state": larger, "motion_excess": list(excess),
            "motion_points": [len(p) for p in points], "motion_points_opaque": surfaces}


@torch.no_grad()
def evaluate(model: GaussianModel, cameras: list[Camera], config: CoarseConfig) -> dict:
    """Mean PSNR (over a fixed black/white background) and mean |D - D_gt| over valid depth of `cameras`."""
    bg = torch.full((3,), 1.0 if config.white_background else 0.0, device=model.device)
    psnrs, depth_errors = [], []
    for camera in cameras:
        out = render(camera, model, bg, depth_ratio=config.depth_ratio, backend=config.backend_name)
        psnrs.append(float(psnr(out["render"].clamp(0.0, 1.0), camera.composite(bg))))
        if camera.depth is not None and bool((camera.depth > 0).any()):
            valid = camera.depth > 0
            depth_errors.append(float((out["depth"] - camera.depth).abs()[valid].mean()))
    return {"psnr": float(np.mean(psnrs)), "depth_mae": float(np.mean(depth_errors)) if depth_errors else None}


# ----------------------------------------------------------------------------------------------------------- main

def train(config: CoarseConfig) -> dict | None:
    """Run stage 2 for one scene; returns its summary, or None when the final outputs already exist."""
    wall_start = time.perf_counter()
    model_path = Path(config.model_path)
    check_folder(model_path, COARSE_STAGE)
    if not config.overwrite and is_done(model_path, config.iterations):
        print(f"[coarse] {config.scene_name}: done already ({iteration_dir(model_path, config.iterations)}); "
              "pass --overwrite to retrain")
        return None
    folder = config.scene_dir
    if not folder.is_dir():
        raise DatasetError(f"scene folder {folder} does not exist (from --source_path/--dataset/--subset/--scene_name)")
    device = pick_device(config.data_device)
    timer = PhaseTimer(device)
    scene = Scene(folder, config.resolution, device, splits=available_splits(folder),
                  white_background=config.white_background)
    timer.mark("load")
    seed_everything(config.seed, device)
    starts = [state_start(scene, state, config, model_path, device) for state in STATES]  # inputs checked here
    if config.overwrite:
        removed = clear_outputs(model_path, COARSE_STAGE)
        if removed:
            log.info("--overwrite: deleted %d files and folders of an earlier run in %s", len(removed), model_path)
    claim_folder(model_path, COARSE_STAGE)
    write_json(model_path / CONFIG_NAME, asdict(config))
    runs = [start_run(start, state, scene, config, model_path, device) for state, start in zip(STATES, starts)]
    for run in runs:
        uses_depth = any(cam.depth is not None for cam in run.cameras) and config.lambda_depth > 0
        log.info("state %d: %d training views at %dx%d on %s, depth loss %s, %d Gaussians, from iteration %d",
                 run.state, len(run.cameras), run.cameras[0].width, run.cameras[0].height, device,
                 "on" if uses_depth else "off (no depth)", run.model.num_points, run.start)
    timer.mark("initialisation")
    optimise(runs, config, model_path, timer)
    train_seconds = timer.total("iterations", "checkpoints and saves")
    for run in runs:
        if not state_iteration_saved(model_path, run.state, config.iterations):
            save_state_iteration(model_path, run, config.iterations, config.motion_voxel_size, config.backend_name)
    timer.mark("checkpoints and saves")
    first_new = min(run.start for run in runs)  # saves after this were (re)written by this run;
    # earlier ones keep their decision, the final one is decided again for the summary
    motion = {}
    for iteration in sorted({it for it in config.save_iterations if it <= config.iterations} | {config.iterations}):
        saved = iteration_dir(model_path, iteration)
        undecided = (iteration == config.iterations or iteration > first_new
                     or not (saved / LARGER_MOTION_NAME).is_file())
        if undecided and all(state_iteration_saved(model_path, state, iteration) for state in STATES):
            motion = decide_motion_state(saved, config.motion_voxel_size, device)
    timer.mark("larger-motion test")
    done = config.iterations - first_new
    summary = {
        "scene": str(folder),
        "iterations": config.iterations,
        "resumed_from": [run.start or None for run in runs],
        "device": str(device),
        "num_gaussians": [run.model.num_points for run in runs],
        **motion,
        "train_seconds": train_seconds,
        "iterations_per_second": done / train_seconds if done > 0 else None,
    }
    for split in available_splits(folder):
        summary[split] = [evaluate(run.model, scene.cameras[(run.state, split)], config) for run in runs]
    timer.mark("evaluation")
    summary["seconds"] = timer.seconds
    summary["wall_seconds"] = time.perf_counter() - wall_start
    summary["peak_gpu_memory_gib"] = peak_gpu_memory_gib(device)
    write_json(model_path / COARSE_SUMMARY_NAME, summary)
    log_summary(config.scene_name, summary, timer.summary())
    return summary


def state_start(scene: Scene, state: int, config: CoarseConfig, model_path: Path,
                device: torch.device) -> tuple[Path, dict] | InitialPoints:
    """Where one state starts: its latest checkpoint and payload (unless --overwrite), else its checked initial
    points; a checkpoint that cannot be read or is beyond --iterations is an error naming it."""
    checkpoint = None if config.overwrite else latest_checkpoint(model_path, coarse_checkpoint_prefix(state))
    if checkpoint is None:
        return initial_points(scene, state, config)
    payload = load_checkpoint(checkpoint, device)
    if payload["iteration"] > config.iterations:
        raise ValueError(f"checkpoint {checkpoint} is at iteration {payload['iteration']}, beyond --iterations "
                         f"{config.iterations}; pass a larger --iterations or --overwrite")
    return checkpoint, payload


def start_run(start: tuple[Path, dict] | InitialPoints, state: int, scene: Scene, config: CoarseConfig,
              model_path: Path, device: torch.device) -> StateRun:
    """One state's run: restored from its checkpoint, else from surfels at its initial points."""
    if isinstance(start, InitialPoints):
        return make_run(state, initial_model(start, state, config, device, model_path), scene, config)
    checkpoint, payload = start
    log.info("state %d: resuming from %s (iteration %d)", state, checkpoint, payload["iteration"])
    return restore_run(payload, state, scene, config, device, checkpoint)


def optimise(runs: list[StateRun], config: CoarseConfig, model_path: Path, timer: PhaseTimer) -> None:
    """Iterations up to config.iterations of every run (each from after its own start) with saving and checkpoints;
    their time goes to `timer`'s "iterations" and "checkpoints and saves"."""
    first = min(run.start for run in runs)
    save_at = {it for it in config.save_iterations if first < it <= config.iterations} | {config.iterations}
    image_loss, guard = image_loss_function(config), FiniteGuard(every=PROGRESS_EVERY, entries="states")
    iteration = first
    bar = tqdm(total=config.iterations, initial=first, desc=f"coarse {config.scene_name}", dynamic_ncols=True)
    try:
        with logging_redirect_tqdm():  # log lines go above the progress bar, not through it
            for iteration in range(first + 1, config.iterations + 1):
                active = [run for run in runs if run.start < iteration]
                guard.update(state_vector(train_step(active, iteration, config, image_loss), active, runs))
                if iteration % PROGRESS_EVERY == 0 or iteration == config.iterations:
                    mean = guard.check(iteration)  # the states' mean losses since the last check
                    if mean is not None:
                        bar.set_postfix(loss="/".join(f"{value:.4f}" for value in mean.tolist()),
                                        gaussians="/".join(str(run.model.num_points) for run in runs))
                    bar.update(iteration - bar.n)
                for run in active:
                    checkpoint_and_save(run, iteration, config, model_path, save_at, guard, timer)
    except RuntimeError as err:  # NaNs can also break the renderer or densifier before the periodic check sees them
        cause = err if isinstance(err, TrainingDiverged) else non_finite(runs, guard, iteration)
        if cause is None:
            raise
        kept = [latest_checkpoint(model_path, coarse_checkpoint_prefix(run.state)) for run in runs]
        kept_names = ", ".join(str(path) for path in kept if path is not None) or "none yet"
        raise TrainingDiverged(f"{cause}; the last good checkpoints are kept: {kept_names}") from err
    finally:
        bar.close()
    timer.mark("iterations")


def checkpoint_and_save(run: StateRun, iteration: int, config: CoarseConfig, model_path: Path,
                        save_at: set[int], guard: FiniteGuard, timer: PhaseTimer) -> None:
    """When due, check for NaNs (losses of every state in `guard`), write the checkpoint and/or this state's outputs
    of the iteration; the time goes to `timer`'s "checkpoints and saves"."""
    due_checkpoint = iteration % config.checkpoint_interval == 0 or iteration == config.iterations
    if not due_checkpoint and iteration not in save_at:
        return
    timer.mark("iterations")
    check_finite([run], guard, iteration)
    if due_checkpoint:
        write_checkpoint(model_path, run, iteration)
    if iteration in save_at:
        save_state_iteration(model_path, run, iteration, config.motion_voxel_size, config.backend_name)
    timer.mark("checkpoints and saves")


def non_finite(runs: list[StateRun], guard: FiniteGuard, iteration: int) -> TrainingDiverged | None:
    """The divergence error if a loss or parameter of `runs` is NaN/inf, else None."""
    try:
        check_finite(runs, guard, iteration)
    except TrainingDiverged as err:
        return err
    return None


def log_summary(scene: str, summary: dict, phases: str) -> None:
    """One line per state with PSNR / depth error per split, then counts, speed and the seconds per phase `phases`."""
    for state in STATES:
        parts = []
        for split in SPLITS:
            if split in summary:
                result = summary[split][state]
                depth = "" if result["depth_mae"] is None else f", depth error {result['depth_mae']:.4f}"
                parts.append(f"{split} PSNR {result['psnr']:.2f} dB{depth}")
        log.info("%s state %d: %s, %d Gaussians", scene, state, "; ".join(parts), summary["num_gaussians"][state])
    speed = summary["iterations_per_second"]
    log.info("%s: larger motion state %d, %.1f s in all (%.1f s training, %s it/s of both states; %s)%s", scene,
             summary["larger_motion_state"], summary["wall_seconds"], summary["train_seconds"],
             "-" if speed is None else f"{speed:.1f}", phases, memory_note(summary["peak_gpu_memory_gib"]))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="[%(name)s] %(message)s")
    log.setLevel(logging.INFO)
    config = parse_args(argv)
    try:
        train(config)
    except TrainingDiverged as err:
        print(f"error: training diverged: {err}", file=sys.stderr)
        return 3
    except (DatasetError, FolderError, CheckpointError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
