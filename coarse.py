"""Stage 2: one 2D Gaussian surfel model per joint state, and which state has the larger motion (DESIGN.md §5).

    python coarse.py --dataset gear --subset synthetic --scene_name cabinet [--iterations 30000] [--resolution 400]

Reads `<source_path>/<dataset>/<subset>/<scene_name>/` (point clouds are made from depth when missing; without depth
from the silhouettes; --no-init_from_pcd starts from random points instead) and writes
under `--model_path` (default `<output_root>/<dataset>/<subset>/<scene_name>/coarse_gs`):

    cfg_args                      JSON of every argument of the last invocation
    chkpnt_state<s>_<N>.pth       each state's latest resumable state (plain tensors and dicts; weights_only=True)
    point_cloud/iteration_<N>/    point_cloud_0.ply, point_cloud_1.ply (start, end), surface_points_0/1.ply (each
                                  model's rendered surface: median depth of the training views where alpha > 0.5,
                                  back-projected; stage 3's input and the larger-motion test's), and
                                  larger_motion_state.txt (0 or 1), at every --save_iterations value reached and at
                                  the final iteration
    coarse_summary.json           PSNR and depth error per state and split, Gaussian counts, wall time, it/s, seconds
                                  per phase (load, initialisation, iterations, checkpoints and saves, larger-motion
                                  test, evaluation), peak GPU memory (GiB; null on the CPU)

The two states' models are independent but train in one loop: each iteration renders one random training view of each
state against its image composited over a random background (--no-random_bg_color: black or --white_background), both in
one gsplat call on CUDA (`gaussian_renderer.render_stacked`: one tile binning, so one host synchronisation, and one
backward for both; the image losses of both renders are one function of the stacked maps), then steps each state's Adam
and densification. Each state draws its views and backgrounds from its
own generator and restarts from its own latest checkpoint unless --overwrite (which removes these outputs first); a
state whose checkpoint is ahead waits until the other catches up. A run whose final outputs exist exits at once. After
densification ends, the surfels that the opacity binarisation drives below the pruning opacity (about two thirds of them
by the end) keep being removed (`--no-prune_transparent`: only while densifying, as DESIGN.md says). Only the progress
bar and NaN check (every PROGRESS_EVERY iterations: the bar shows each state's mean loss since the last one, summed on
the device), checkpoints and saves read values back from the device here (gsplat's densification statistics are
gathered without a sync, scene.gaussian_model). The image losses replay as one captured CUDA graph
(utils/cuda_graphs.py). A NaN/inf loss stops the run (exit 3) and keeps the last checkpoints, which
are only written after such a check.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from arguments import ModelParams, OptimizationParams, PipelineParams, iteration_dir, scene_dir, scene_output_dir
from gaussian_renderer import render, render_stacked
from scene import Scene, point_cloud_path
from scene.cameras import Camera
from scene.dataset_readers import SPLITS, DatasetError, transforms_path
from scene.gaussian_model import Densifier, GaussianModel
from utils.image_utils import psnr
from utils.io_utils import read_json, write_json, write_text
from utils.cuda_graphs import GraphedFunction
from utils.loss_utils import opacity_binarisation_loss
from utils.motion_state import DEFAULT_VOXEL_SIZE, motion_excesses
from utils.point_cloud import (backproject_depth, random_points_in_views, read_point_ply, voxel_downsample,
                               write_point_ply)
from utils.timing import PhaseTimer, memory_note, peak_gpu_memory_gib
from utils.train_utils import (
    FiniteGuard,
    TrainingDiverged,
    background,
    image_loss_terms,
    latest_checkpoint,
    learning_rates,
    load_checkpoint,
    pick_device,
    restore_surfel_training,
    save_checkpoint,
    seed_everything,
    surfel_checkpoint,
)

log = logging.getLogger("coarse")

STATES = (0, 1)
PROGRESS_EVERY = 50  # iterations between progress-bar updates and NaN checks (each one host sync)
OPAQUE = 0.5  # opacity from which a Gaussian's centre counts as surface for the larger-motion test
INIT_OPACITY = 0.1
CHECKPOINT_PREFIX = "chkpnt"
COARSE_NAME = "coarse_gs"  # default model folder inside the scene's output folder
SUMMARY_NAME = "coarse_summary.json"
MOTION_NAME = "larger_motion_state.txt"
SURFACE_PREFIX = "surface_points_"  # + <state>.ply: rendered surface of each state's model (stage 3 reads it)
# LAMBDA_DIST note (the default of --lambda_dist lives in arguments/OptimizationParams). gsplat's distortion is
# sum_ij w_i w_j |z_i - z_j| in scene units, an L1 form; 2DGS's 100-1000 weigh squared NDC depth differences, orders
# of magnitude smaller for objects 3 units from the camera, so those weights do not transfer. The per-pixel value is
# about the depth spread along the ray: a few mm on a formed surface, but tens of cm on the mixed pixels of anti-
# aliased silhouettes. Measured on the synthetic cabinet (600 iterations, distortion from 300, 48 and 96 px), weights
# 0/1/10/100: 1 is neutral to slightly helpful (3-7 % more opaque surfels, their centres 2-3 % closer to the GT
# surface at 48 px, at most -0.3 dB), while 10 costs 1-2 dB and 20-50 % depth error and 100 costs ~6 dB and 3-4x depth
# error, the term then outweighing the photometric loss (it hardens silhouettes against the anti-aliased images).
# At 400 px on the GPU (10k-iteration run, ~10^5 half-transparent surfels early on) weight 1 made the distortion
# ~0.25 per pixel against a photometric loss of ~0.01, twenty times the image term, so the default is 0.1.


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

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The 3DGS-style argument groups plus stage-2 options; `model_path` is resolved to its default when empty."""
    parser = argparse.ArgumentParser(description="Stage 2: coarse 2D Gaussian surfels of both joint states.")
    ModelParams(parser)
    OptimizationParams(parser)
    PipelineParams(parser)
    stage = parser.add_argument_group("Stage 2")
    stage.add_argument("--checkpoint_interval", type=int, default=5000,
                       help="iterations between checkpoints (the latest one is kept; also saved at the end)")
    stage.add_argument("--motion_voxel_size", type=float, default=DEFAULT_VOXEL_SIZE,
                       help="voxel edge of the larger-motion-state test (scene units)")
    stage.add_argument("--prune_transparent", action=argparse.BooleanOptionalAction, default=True,
                       help="after densification ends, keep removing surfels whose opacity fell below 0.005 every "
                            "--densification_interval iterations (the opacity binarisation drives most surfels there; "
                            "they render nothing); --no-prune_transparent prunes only while densifying")
    stage.add_argument("--init_from_pcd", action=argparse.BooleanOptionalAction, default=True,
                       help="start each state from its point cloud (point_cloud_<state>.ply, made from depth, or from "
                            "the silhouettes without depth, when missing); --no-init_from_pcd starts from "
                            "--random_init_points random points where at least half of the training views look, "
                            "with random colours (3DGS's random initialisation)")
    stage.add_argument("--random_init_points", type=int, default=100_000,
                       help="how many random points --no-init_from_pcd starts from")
    stage.add_argument("--overwrite", action="store_true",
                       help="remove this model's outputs and checkpoints first instead of resuming")
    parser.set_defaults(random_bg_color=True)
    args = parser.parse_args(argv)
    if not args.scene_name:
        parser.error("--scene_name is required")
    if args.iterations < 1 or args.checkpoint_interval < 1 or args.random_init_points < 2:
        parser.error("--iterations and --checkpoint_interval must be positive, --random_init_points at least 2")
    if not args.model_path:
        args.model_path = str(scene_output_dir(args) / COARSE_NAME)
    return args


# ---------------------------------------------------------------------------------------------------- file layout

def is_done(model_path: Path, iterations: int) -> bool:
    """Whether the final PLYs, the larger-motion state and the summary of `iterations` exist."""
    folder = iteration_dir(model_path, iterations)
    names = ("point_cloud_0.ply", "point_cloud_1.ply", MOTION_NAME)
    if not all((folder / name).is_file() for name in names) or not (model_path / SUMMARY_NAME).is_file():
        return False
    try:
        return read_json(model_path / SUMMARY_NAME, "stage-2 summary").get("iterations") == iterations
    except ValueError:
        return False


def clear_outputs(model_path: Path) -> None:
    """Remove what this stage writes in `model_path` (and stage-3 files inside its iteration folders)."""
    if (model_path / "point_cloud").is_dir():
        shutil.rmtree(model_path / "point_cloud")
    for path in [*model_path.glob(f"{CHECKPOINT_PREFIX}*.pth"), model_path / "cfg_args", model_path / SUMMARY_NAME]:
        path.unlink(missing_ok=True)


def available_splits(folder: Path) -> tuple[str, ...]:
    """("train", "test") when both states have test transforms, else ("train",)."""
    has_test = all(transforms_path(folder, state, "test").is_file() for state in STATES)
    return SPLITS if has_test else ("train",)


# --------------------------------------------------------------------------------------------------- construction

def initial_model(scene: Scene, state: int, args: argparse.Namespace, device: torch.device) -> GaussianModel:
    """Surfels (opacity 0.1, scale from the 3 nearest neighbours) at the state's point cloud, or with
    --no-init_from_pcd at --random_init_points random points where the state's cameras look; errors name the file."""
    if args.init_from_pcd:
        points, colours = checked_point_cloud(scene, state)
    else:
        points, colours = random_points_in_views(scene.train_cameras(state), args.random_init_points,
                                                 seed=args.seed + state)
        log.info("state %d: %d random initial points where the training views look", state, len(points))
    return GaussianModel.from_point_cloud(points, colours, sh_degree=args.sh_degree, init_opacity=INIT_OPACITY,
                                          device=device, seed=args.seed + state)


def checked_point_cloud(scene: Scene, state: int) -> tuple[np.ndarray, np.ndarray]:
    """The state's point cloud (M, 3) and colours (M, 3): at least 2 finite points, else an error naming the file."""
    points, colours = scene.point_cloud(state)
    path = point_cloud_path(scene.scene_dir, state)
    if len(points) < 2:
        raise DatasetError(f"point cloud {path} has {len(points)} point(s); at least 2 are needed")
    if not (np.isfinite(points).all() and np.isfinite(colours).all()):
        raise DatasetError(f"point cloud {path} contains NaN or infinite values")
    return points, colours


def make_run(state: int, model: GaussianModel, scene: Scene, args: argparse.Namespace, start: int = 0) -> StateRun:
    """Optimisers (position lr scaled by the camera extent), densifier and generator (seed + state) of one state's
    model, which starts after iteration `start`."""
    model.setup_optimizers(learning_rates(args), spatial_scale=scene.extent, max_steps=args.iterations)
    densifier = Densifier(model, scene_scale=scene.extent, refine_start=args.densify_from_iter,
                          refine_stop=args.densify_until_iter, refine_every=args.densification_interval,
                          grad_threshold=args.densify_grad_threshold, reset_every=args.opacity_reset_interval,
                          prune_after_stop=args.prune_transparent)
    generator = torch.Generator().manual_seed(args.seed + state)
    return StateRun(state, model, densifier, scene.train_cameras(state), generator, start)


# ------------------------------------------------------------------------------------------------------- training

def image_loss_function(args: argparse.Namespace) -> GraphedFunction:
    """The image terms of all states' renders at once (`image_loss_terms` of stacked maps), replayed from CUDA
    graphs."""
    return GraphedFunction(partial(image_loss_terms, args=args), enabled=args.cuda_graphs)


def image_maps(batch: dict, cameras: list[Camera], bgs: Tensor, args: argparse.Namespace,
               iteration: int) -> dict[str, Tensor]:
    """The maps (S, ...) of `image_loss_terms` for the stage-2 terms active at `iteration`: the renders
    `batch` of `cameras` (`render_stacked`) over backgrounds `bgs` (S, 3) and their targets. A view without depth
    gets zero target depth, which the depth term skips."""
    maps = {"render": batch["render"], "image": torch.stack([cam.image for cam in cameras]),
            "image_alpha": torch.stack([cam.alpha for cam in cameras]), "bg": bgs}
    if args.lambda_depth > 0 and any(cam.depth is not None for cam in cameras):
        maps |= {"depth": batch["depth"], "gt_depth": torch.stack([
            torch.zeros_like(cam.alpha) if cam.depth is None else cam.depth for cam in cameras])}
    if args.lambda_normal > 0 and iteration > args.normal_from_iter:
        maps |= {"rend_normal": batch["rend_normal"], "alpha": batch["alpha"], "depth": batch["depth"],
                 "viewmat": batch["viewmats"], "K": batch["Ks"]}
    if args.lambda_dist > 0 and iteration > args.dist_from_iter:
        maps["rend_dist"] = batch["rend_dist"]
    return maps


def state_losses(runs: list[StateRun], batch: dict, cameras: list[Camera], bgs: Tensor, args: argparse.Namespace,
                 iteration: int, image_loss: GraphedFunction) -> Tensor:
    """DESIGN.md's stage-2 loss of each run's render in `batch` (`render_stacked` of `cameras` over `bgs`): (S,)."""
    losses = image_loss(image_maps(batch, cameras, bgs, args, iteration)).sum(dim=1)
    if args.lambda_opacity > 0 and iteration > args.opacity_from_iter:
        opacity = torch.stack([opacity_binarisation_loss(run.model.get_opacity) for run in runs])
        losses = losses + args.lambda_opacity * opacity
    return losses


def train_step(runs: list[StateRun], iteration: int, args: argparse.Namespace, image_loss: GraphedFunction) -> Tensor:
    """One iteration of each run: render one random view of every state (one call), backpropagate the sum of their
    losses, densify, step Adam; returns the detached losses (S,)."""
    cameras, bgs = [], []
    for run in runs:
        run.model.update_learning_rate(iteration)
        if iteration % args.sh_increase_interval == 0:
            run.model.oneup_sh_degree()
        cameras.append(run.next_camera())
        bgs.append(background(args.random_bg_color, args.white_background, run.model.device, run.generator))
    bgs = torch.stack(bgs)
    batch, infos = render_stacked(cameras, [run.model for run in runs], bgs, with_surf_normal=False,
                                  depth_ratio=args.depth_ratio, backend=backend_name(args))
    losses = state_losses(runs, batch, cameras, bgs, args, iteration, image_loss)
    for run, info in zip(runs, infos):
        run.densifier.pre_backward(iteration, info)
    losses.sum().backward()
    for run, info in zip(runs, infos):
        run.densifier.post_backward(iteration, info)  # grows and prunes when its schedule says so
        run.model.step_optimizers()
    return losses.detach()


def backend_name(args: argparse.Namespace) -> str | None:
    return None if args.backend == "auto" else args.backend


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

def checkpoint_prefix(state: int) -> str:
    """File-name prefix of one state's checkpoints: `chkpnt_state<s>_` + iteration + `.pth`."""
    return f"{CHECKPOINT_PREFIX}_state{state}_"


def checkpoint_payload(run: StateRun, iteration: int) -> dict:
    """Plain tensors and dicts (loadable with weights_only=True) that let one state's training continue."""
    rng = {"torch": torch.get_rng_state(), "generator": run.generator.get_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "iteration": iteration,
        "state": run.state,
        "rng": rng,
        **surfel_checkpoint(run.model, run.densifier),
        "views": torch.tensor(run.views, dtype=torch.int64),
    }


def restore_run(payload: dict, state: int, scene: Scene, args: argparse.Namespace, device: torch.device,
                path: Path) -> StateRun:
    """Rebuild one state's run (model, Adam moments, densifier statistics, view order, RNGs) from a checkpoint."""
    try:
        if payload["state"] != state:
            raise ValueError(f"it holds state {payload['state']}, not {state}")
        params = {name: value.to(device).requires_grad_() for name, value in payload["params"].items()}
        model = GaussianModel(params, args.sh_degree, active_sh_degree=int(payload["active_sh_degree"]))
        run = make_run(state, model, scene, args, start=payload["iteration"])
        restore_surfel_training(model, run.densifier, payload)
        run.views = payload["views"].tolist()
        torch.set_rng_state(payload["rng"]["torch"].cpu())
        run.generator.set_state(payload["rng"]["generator"].cpu())
        if "cuda" in payload["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([rng.cpu() for rng in payload["rng"]["cuda"]])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"checkpoint {path} does not match this model ({err}); "
                         "pass --overwrite to start afresh") from err
    return run


def write_checkpoint(model_path: Path, run: StateRun, iteration: int) -> Path:
    """Save this state's checkpoint of `iteration`, then delete its older ones (the new one is complete)."""
    prefix = checkpoint_prefix(run.state)
    path = model_path / f"{prefix}{iteration}.pth"
    save_checkpoint(path, checkpoint_payload(run, iteration))
    for old in model_path.glob(f"{prefix}*.pth"):
        if old != path:
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
    run.model.save_ply(folder / f"point_cloud_{run.state}.ply")
    write_point_ply(folder / f"{SURFACE_PREFIX}{run.state}.ply",
                    *rendered_surface(run.model, run.cameras, voxel_size / 2, backend))


def state_iteration_saved(model_path: Path, state: int, iteration: int) -> bool:
    """Whether one state's PLY and rendered surface of `iteration` exist."""
    folder = iteration_dir(model_path, iteration)
    return all((folder / f"{name}{state}.ply").is_file() for name in ("point_cloud_", SURFACE_PREFIX))


def decide_motion_state(folder: Path, voxel_size: float, device: torch.device) -> dict:
    """Write `larger_motion_state.txt` of a saved iteration folder (last, so that its presence means the folder is
    complete) from both states' rendered surfaces (their opaque surfel centres when a surface is empty)."""
    points = [read_point_ply(folder / f"{SURFACE_PREFIX}{state}.ply")[0].astype(np.float64) for state in STATES]
    surfaces = all(len(p) for p in points)
    if not surfaces:
        points = fallback_centres([GaussianModel.load_ply(folder / f"point_cloud_{s}.ply", device) for s in STATES])
    excess = motion_excesses(points[0], points[1], voxel_size)
    larger = int(excess[1] > excess[0])
    write_text(folder / MOTION_NAME, f"{larger}\n")
    log.info("saved %s (larger motion state %d; excess %.3f vs %.3f)", folder, larger, *excess)
    return {"larger_motion_state": larger, "motion_excess": list(excess),
            "motion_points": [len(p) for p in points], "motion_points_opaque": surfaces}


@torch.no_grad()
def evaluate(model: GaussianModel, cameras: list[Camera], args: argparse.Namespace) -> dict:
    """Mean PSNR (over a fixed black/white background) and mean |D - D_gt| over valid depth of `cameras`."""
    bg = torch.full((3,), 1.0 if args.white_background else 0.0, device=model.device)
    psnrs, depth_errors = [], []
    for camera in cameras:
        out = render(camera, model, bg, depth_ratio=args.depth_ratio, backend=backend_name(args))
        psnrs.append(float(psnr(out["render"].clamp(0.0, 1.0), camera.composite(bg))))
        if camera.depth is not None and bool((camera.depth > 0).any()):
            valid = camera.depth > 0
            depth_errors.append(float((out["depth"] - camera.depth).abs()[valid].mean()))
    return {"psnr": float(np.mean(psnrs)), "depth_mae": float(np.mean(depth_errors)) if depth_errors else None}


# ----------------------------------------------------------------------------------------------------------- main

def train(args: argparse.Namespace) -> dict | None:
    """Run stage 2 for one scene; returns its summary, or None when the final outputs already exist."""
    wall_start = time.perf_counter()
    model_path = Path(args.model_path)
    if args.overwrite:
        clear_outputs(model_path)
    elif is_done(model_path, args.iterations):
        print(f"[coarse] {args.scene_name}: done already ({iteration_dir(model_path, args.iterations)}); "
              "pass --overwrite to retrain")
        return None
    folder = scene_dir(args)
    if not folder.is_dir():
        raise DatasetError(f"scene folder {folder} does not exist (from --source_path/--dataset/--subset/--scene_name)")
    write_json(model_path / "cfg_args", vars(args))
    device = pick_device(args.data_device)
    timer = PhaseTimer(device)
    scene = Scene(folder, args.resolution, device, splits=available_splits(folder), load_masks=False)
    timer.mark("load")
    seed_everything(args.seed, device)
    runs = [start_run(scene, state, args, model_path, device) for state in STATES]
    for run in runs:
        uses_depth = any(cam.depth is not None for cam in run.cameras) and args.lambda_depth > 0
        log.info("state %d: %d training views at %dx%d on %s, depth loss %s, %d Gaussians, from iteration %d",
                 run.state, len(run.cameras), run.cameras[0].width, run.cameras[0].height, device,
                 "on" if uses_depth else "off (no depth)", run.model.num_points, run.start)
    timer.mark("initialisation")
    optimise(runs, args, model_path, timer)
    train_seconds = timer.total("iterations", "checkpoints and saves")
    for run in runs:
        if not state_iteration_saved(model_path, run.state, args.iterations):
            save_state_iteration(model_path, run, args.iterations, args.motion_voxel_size, backend_name(args))
    timer.mark("checkpoints and saves")
    first_new = min(run.start for run in runs)  # saves after this were (re)written by this run;
    # earlier ones keep their decision, the final one is decided again for the summary
    motion = {}
    for iteration in sorted({it for it in args.save_iterations if it <= args.iterations} | {args.iterations}):
        saved = iteration_dir(model_path, iteration)
        undecided = iteration == args.iterations or iteration > first_new or not (saved / MOTION_NAME).is_file()
        if undecided and all(state_iteration_saved(model_path, state, iteration) for state in STATES):
            motion = decide_motion_state(saved, args.motion_voxel_size, device)
    timer.mark("larger-motion test")
    done = args.iterations - first_new
    summary = {
        "scene": str(folder),
        "iterations": args.iterations,
        "resumed_from": [run.start or None for run in runs],
        "device": str(device),
        "num_gaussians": [run.model.num_points for run in runs],
        **motion,
        "train_seconds": train_seconds,
        "iterations_per_second": done / train_seconds if done > 0 else None,
    }
    for split in available_splits(folder):
        summary[split] = [evaluate(run.model, scene.cameras[(run.state, split)], args) for run in runs]
    timer.mark("evaluation")
    summary["seconds"] = timer.seconds
    summary["wall_seconds"] = time.perf_counter() - wall_start
    summary["peak_gpu_memory_gib"] = peak_gpu_memory_gib(device)
    write_json(model_path / SUMMARY_NAME, summary)
    log_summary(args.scene_name, summary, timer.summary())
    return summary


def start_run(scene: Scene, state: int, args: argparse.Namespace, model_path: Path, device: torch.device) -> StateRun:
    """One state's run: from its latest checkpoint, else from its initial surfels (`initial_model`)."""
    checkpoint = latest_checkpoint(model_path, checkpoint_prefix(state))
    if checkpoint is None:
        return make_run(state, initial_model(scene, state, args, device), scene, args)
    try:
        payload = load_checkpoint(checkpoint, device)
    except Exception as err:  # torch raises several types for corrupt or foreign files
        raise ValueError(f"cannot read checkpoint {checkpoint} ({err}); pass --overwrite to start afresh") from err
    if not isinstance(payload, dict) or not isinstance(payload.get("iteration"), int):
        raise ValueError(f"{checkpoint} is not a stage-2 checkpoint; pass --overwrite to start afresh")
    if payload["iteration"] > args.iterations:
        raise ValueError(f"checkpoint {checkpoint} is at iteration {payload['iteration']}, beyond --iterations "
                         f"{args.iterations}; pass a larger --iterations or --overwrite")
    log.info("state %d: resuming from %s (iteration %d)", state, checkpoint, payload["iteration"])
    return restore_run(payload, state, scene, args, device, checkpoint)


def optimise(runs: list[StateRun], args: argparse.Namespace, model_path: Path, timer: PhaseTimer) -> None:
    """Iterations up to args.iterations of every run (each from after its own start) with saving and checkpoints;
    their time goes to `timer`'s "iterations" and "checkpoints and saves"."""
    first = min(run.start for run in runs)
    save_at = {it for it in args.save_iterations if first < it <= args.iterations} | {args.iterations}
    image_loss, guard = image_loss_function(args), FiniteGuard(every=PROGRESS_EVERY, entries="states")
    iteration = first
    bar = tqdm(total=args.iterations, initial=first, desc=f"coarse {args.scene_name}", dynamic_ncols=True)
    try:
        with logging_redirect_tqdm():  # log lines go above the progress bar, not through it
            for iteration in range(first + 1, args.iterations + 1):
                active = [run for run in runs if run.start < iteration]
                guard.update(state_vector(train_step(active, iteration, args, image_loss), active, runs))
                if iteration % PROGRESS_EVERY == 0 or iteration == args.iterations:
                    mean = guard.check(iteration)  # the states' mean losses since the last check
                    if mean is not None:
                        bar.set_postfix(loss="/".join(f"{value:.4f}" for value in mean.tolist()),
                                        gaussians="/".join(str(run.model.num_points) for run in runs))
                    bar.update(iteration - bar.n)
                for run in active:
                    checkpoint_and_save(run, iteration, args, model_path, save_at, guard, timer)
    except RuntimeError as err:  # NaNs can also break the renderer or densifier before the periodic check sees them
        cause = err if isinstance(err, TrainingDiverged) else non_finite(runs, guard, iteration)
        if cause is None:
            raise
        kept = [latest_checkpoint(model_path, checkpoint_prefix(run.state)) for run in runs]
        kept_names = ", ".join(str(path) for path in kept if path is not None) or "none yet"
        raise TrainingDiverged(f"{cause}; the last good checkpoints are kept: {kept_names}") from err
    finally:
        bar.close()
    timer.mark("iterations")


def checkpoint_and_save(run: StateRun, iteration: int, args: argparse.Namespace, model_path: Path,
                        save_at: set[int], guard: FiniteGuard, timer: PhaseTimer) -> None:
    """When due, check for NaNs (losses of every state in `guard`), write the checkpoint and/or this state's outputs
    of the iteration; the time goes to `timer`'s "checkpoints and saves"."""
    due_checkpoint = iteration % args.checkpoint_interval == 0 or iteration == args.iterations
    if not due_checkpoint and iteration not in save_at:
        return
    timer.mark("iterations")
    check_finite([run], guard, iteration)
    if due_checkpoint:
        write_checkpoint(model_path, run, iteration)
    if iteration in save_at:
        save_state_iteration(model_path, run, iteration, args.motion_voxel_size, backend_name(args))
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
    args = parse_args(argv)
    try:
        train(args)
    except TrainingDiverged as err:
        print(f"error: training diverged: {err}", file=sys.stderr)
        return 3
    except (DatasetError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
