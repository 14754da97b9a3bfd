"""Stage 5: renders, part-segmentation images, orbit video, per-part meshes, metrics, joint export and URDF.

    python render.py --dataset gear --subset synthetic --scene_name cabinet [--source_path data]
        [--output_root outputs] [--model_name gear | --model_path PATH] [--iteration N|final]
        [--skip_train] [--skip_test] [--skip_mesh] [--eval_app] [--mode eval|render]

Reads the stage-4 model (`scene/trained_model.py`: canonical surfels with part logits, part motions, canonical
state) and the scene's cameras; the canonical state is rendered as stored, the other state with the surfels deformed
by hard (one-hot argmax) part weights. Everything goes to `<model_path>/eval/`; a run writes into a fresh folder
(`.eval.new`) and swaps it in as `eval/` only when it is complete, so `eval/` always holds one run's outputs (files
there that stage 5 does not write are carried over):

    renders/<state>/<split>/<name>.png  RGB over the background (black, or white with --white_background)
    parts/<state>/<split>/<name>.png    part colours (PART_PALETTE: static grey, then one colour per movable part) of
                                        the argmax of the rendered part logits; pixels with alpha < 0.5 black
    depth/<state>/<split>/<name>.png    rendered depth, turbo colour map stretched over the view's foreground (near =
                                        blue), background black
    normal/<state>/<split>/<name>.png   rendered world-frame normals as (n + 1) / 2, background black
    orbit.gif                           [RGB | parts] frames around the object while it moves start -> end -> start
    meshes/<state>_<part>.ply           TSDF fusion of rendered depth (alpha > 0.5) and colour, state start|end,
                                        part whole (all surfels) | static (part 0) | part_<k> (movable part k, rendered
                                        alone); marching cubes; --keep_largest: a part's largest connected component,
                                        the whole object's components of >= WHOLE_MIN_AREA of the largest's area
                                        (parts that open apart stay, floaters go); decimated to --max_faces faces;
                                        the metrics measure these meshes
    meshes/start_<part>.obj             the start-state static and part meshes as plain OBJ, for the simulators
    joint_info.json                     {"joints": [{"part", "type", "axis_origin", "axis_direction", "motion"}],
                                        "larger_motion_state"}: start -> end, world frame, degrees or scene units,
                                        motion >= 0 (the axis direction carries the sign)
    urdf/<scene>.urdf, mjcf/<scene>.xml static base + one link and joint per movable part, inertia from the mesh
                                        volume at --density, limits spanning both states (evaluation/export.py)
    export.json                         face counts before/after decimation, masses and which volume they used
    metrics.json                        (eval mode) {"scene", "dataset", "subset", "model_path", "iteration",
                                        "canonical_state", "summary", "joints", "meshes", "images", "part_labels",
                                        "seconds", "peak_gpu_memory_gib"}: summary..part_labels from
                                        evaluation.metrics.summarise (peak GPU memory: null on the CPU); joint, mesh
                                        and part-label metrics need `gt/` (null without it; part labels: the share
                                        of opaque canonical surfels labelled with the part of the nearest
                                        ground-truth part surface), PSNR/SSIM the test views, overall and per state
                                        (null with --skip_test);
                                        seconds: wall time per phase (load, train views, test views, orbit,
                                        meshes, exports, metrics)
    result.csv                          (eval mode) the flat summary as one CSV row (evaluation.metrics)

<state> is start|end, <split> train|test, <name> the dataset image's name. `--mode render` skips the metrics
(`--eval_app` then still writes PSNR/SSIM). One result row per scene lives in its own `eval/result.csv`;
`benchmarks/collect_results.py` gathers many scenes into one table.
"""
from __future__ import annotations

import logging
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import imageio.v3 as iio
import numpy as np
import torch
import trimesh
from torch import Tensor
from tqdm import tqdm

from arguments import ModelOptions, PipelineOptions, SceneOptions, add_options, build, default_model_path, new_parser, \
    option
from gaussian_renderer import render
from scene.cameras import STATES, Camera
from scene.contract import EVAL_DIR, EVAL_NEW_DIR, EVAL_OLD_DIR, EVAL_OUTPUTS, MODEL_NAME
from scene.dataset_readers import DatasetError, check_resolution, load_cameras, transforms_path
from scene.gaussian_model import GaussianModel
from scene.trained_model import ModelNotFoundError, TrainedModel
from utils.graphics_utils import look_at_w2c
from utils.io_utils import atomic_path, write_json
from evaluation.export import ExportConfig, export_twin
from evaluation.metrics import (
    HEADLINE_KEYS,
    evaluate_images,
    evaluate_joints,
    evaluate_meshes,
    evaluate_part_labels,
    load_gt_joints,
    load_gt_meshes,
    mesh_part_pairs,
    summarise,
    write_result_csv,
)
from utils.runtime import pick_device
from utils.timing import PhaseTimer, peak_gpu_memory_gib
from evaluation.tsdf import TSDFVolume, default_bounds, keep_large_components

log = logging.getLogger("render")

TRAIN_HINT = ("make it with: python train.py --dataset {dataset} --subset {subset} --scene_name {scene} "
              "--model_path {model_path} (or scripts/4_train.sh)")
PART_PALETTE = np.array([[160, 160, 160], [230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 225, 25],
                         [145, 30, 180], [70, 240, 240], [245, 130, 48], [240, 50, 230], [210, 245, 60]], np.uint8)
VOXELS_PER_SIDE = 200  # automatic TSDF voxel = largest side of the object's bounds / this
WHOLE_MIN_AREA = 0.02  # whole meshes keep every connected component of at least this fraction of the largest area
BOUNDS_QUANTILE = 0.002  # automatic bounds ignore this fraction of outlying surfel centres on each side
BOUNDS_MARGIN = 0.05  # ... and are padded by this fraction of their largest side plus the truncation distance
OPAQUE = 0.5  # surfels at least this opaque define the automatic bounds
ORBIT_FRAME_MS = 80


@dataclass
class View:
    """What mesh fusion needs of one rendered view."""

    camera: Camera
    depth: Tensor  # (H, W)
    alpha: Tensor  # (H, W)
    rgb: Tensor  # (3, H, W)


# ------------------------------------------------------------------------------------------------------ arguments
@dataclass(frozen=True)
class RenderConfig(SceneOptions, ModelOptions, PipelineOptions):
    """Stage 5: which model iteration, what to render, mesh fusion and metrics."""

    model_name: str = option(MODEL_NAME, "the stage-4 model folder inside the scene's output folder (the default "
                                         "--model_path)")
    iteration: str = option("final", "stage-4 iteration to read, or 'final' (the highest)")
    mode: str = option("eval", "eval: everything plus metrics.json; render: no metrics (unless --eval_app)",
                       choices=("eval", "render"))
    eval_app: bool = option(False, "PSNR/SSIM on the test views in render mode too")
    skip_train: bool = option(False, "do not write images of the training views")
    skip_test: bool = option(False, "do not render the test views (no PSNR/SSIM)")
    skip_mesh: bool = option(False, "no meshes, mesh metrics or URDF")
    tsdf_voxel_size: float = option(0.0, f"TSDF voxel edge; 0 = the object's largest side / {VOXELS_PER_SIDE}")
    tsdf_trunc: float = option(0.0, "TSDF truncation distance; 0 = 4 voxels")
    tsdf_bounds: tuple[float, ...] | None = option(None, "TSDF grid bounds; default: each part's surfels in the "
                                                         "state, padded", type=float, nargs=6,
                                                   metavar=("XMIN", "YMIN", "ZMIN", "XMAX", "YMAX", "ZMAX"))
    keep_largest: bool = option(True, "keep only each part mesh's largest connected component (whole meshes: every "
                                      f"component of >= {WHOLE_MIN_AREA:g} of the largest one's area)")
    mesh_views: str = option("train", "cameras whose renders are fused into the meshes",
                             choices=("train", "orbit", "both"))
    alpha_threshold: float = option(0.5, "pixels fused into meshes: alpha above")
    orbit_frames: int = option(60, "frames of orbit.gif (0 = no video)")
    orbit_elevation: float = option(25.0, "orbit elevation in degrees")
    chamfer_samples: int = option(10_000, "surface samples per mesh for Chamfer")
    max_faces: int = option(ExportConfig.max_faces, "decimate every exported mesh to about this many faces (0 = keep "
                                                    "the fused mesh)")
    density: float = option(ExportConfig.density, "assumed uniform density of the parts for the exported masses and "
                                                  "inertias, in kg per cubic scene unit")


def parse_args(argv: list[str] | None) -> RenderConfig:
    """The stage-5 settings; `model_path` is resolved to its default when empty."""
    parser = new_parser("Stage 5: renders, meshes, metrics, joint export and URDF.")
    add_options(parser, RenderConfig)
    args = parser.parse_args(argv)
    if not args.scene_name:
        parser.error("--scene_name is required")
    if args.orbit_frames < 0 or args.tsdf_voxel_size < 0 or args.tsdf_trunc < 0:
        parser.error("--orbit_frames, --tsdf_voxel_size and --tsdf_trunc must not be negative")
    if args.mesh_views != "train" and args.orbit_frames == 0:
        parser.error(f"--mesh_views {args.mesh_views} fuses the orbit cameras: --orbit_frames must be positive")
    try:
        check_resolution(args.resolution)
        ExportConfig(max_faces=args.max_faces, density=args.density)
    except ValueError as err:
        parser.error(str(err))
    config = build(RenderConfig, args)
    return replace(config, model_path=default_model_path(config, config.model_path, config.model_name))


# ------------------------------------------------------------------------------------------------ the eval folder
def fresh_eval_folder(model_path: Path) -> Path:
    """An empty `<model_path>/.eval.new` to write this run's outputs into (a killed run's leftover is removed)."""
    new = model_path / EVAL_NEW_DIR
    if new.exists():
        shutil.rmtree(new)
    new.mkdir(parents=True)
    return new


def swap_in_eval(model_path: Path) -> Path:
    """Make the finished `.eval.new` the model's `eval/`: entries of the old `eval/` that stage 5 does not write
    (a user's notes) move into the new one, then the old folder is renamed away and deleted."""
    new, final, old = model_path / EVAL_NEW_DIR, model_path / EVAL_DIR, model_path / EVAL_OLD_DIR
    if old.exists():
        shutil.rmtree(old)
    if final.is_dir():
        for entry in final.iterdir():
            if entry.name not in EVAL_OUTPUTS and not (new / entry.name).exists():
                entry.rename(new / entry.name)
        final.rename(old)
    new.rename(final)
    if old.exists():
        shutil.rmtree(old)
    return final


# ------------------------------------------------------------------------------------------------------- images
def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB image atomically."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write image {path}")


def to_uint8(image: Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8."""
    return (image.clamp(0.0, 1.0).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


def part_image(features: Tensor, alpha: Tensor, threshold: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8 part colours of the argmax of rendered logits `features` (K, H, W); alpha (H, W) <= threshold
    is black."""
    parts = features.argmax(dim=0).cpu().numpy()
    image = PART_PALETTE[parts % len(PART_PALETTE)]
    image[(alpha <= threshold).cpu().numpy()] = 0
    return image


def depth_image(depth: Tensor, alpha: Tensor, threshold: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8 turbo colour map of depth (H, W) stretched over the foreground (alpha > threshold)."""
    depth, fg = depth.cpu().numpy(), (alpha > threshold).cpu().numpy()
    if not fg.any():
        return np.zeros((*depth.shape, 3), np.uint8)
    lo, hi = np.percentile(depth[fg], [1.0, 99.0])
    scaled = np.clip((depth - lo) / max(hi - lo, 1e-8), 0.0, 1.0)
    image = cv2.cvtColor(cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)
    image[~fg] = 0
    return image


def normal_image(normal: Tensor, alpha: Tensor, threshold: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8 world normals (3, H, W) as (n + 1) / 2; alpha (H, W) <= threshold is black."""
    unit = torch.nn.functional.normalize(normal, dim=0)
    image = to_uint8(0.5 * (unit + 1.0))
    image[(alpha <= threshold).cpu().numpy()] = 0
    return image


# ---------------------------------------------------------------------------------------------------- rendering
class Renderer:
    """Renders the trained model, or one part of it, in a state with fixed background and renderer settings.

    A part is rendered as a model of only its surfels: the same image as `render(..., mask=part_mask)`, without
    the cost of the other parts' surfels.
    """

    def __init__(self, model: TrainedModel, bg: Tensor, backend: str | None, depth_ratio: float) -> None:
        self.model, self.bg, self.backend, self.depth_ratio = model, bg, backend, depth_ratio
        self.surfels = {state: model.surfels_in_state(state) for state in (0, 1)}
        self._parts: dict[int, tuple[GaussianModel, Tensor]] = {}

    def _part(self, part: int) -> tuple[GaussianModel, Tensor]:
        """The sub-model of `part`'s surfels and its (N,) bool mask, cached."""
        if part not in self._parts:
            mask = self.model.part_mask(part)
            gaussians = self.model.gaussians
            params = {name: value[mask] for name, value in gaussians.params.items()}
            self._parts[part] = (GaussianModel(params, gaussians.max_sh_degree, gaussians.active_sh_degree), mask)
        return self._parts[part]

    @torch.no_grad()
    def __call__(self, camera: Camera, state: int, part: int = -1,
                 surfels: tuple[Tensor, Tensor] | None = None) -> dict:
        """Render `camera` with the surfels of `part` (-1 = all) in `state`, or every surfel at explicit
        `surfels` (means (N, 3), rotations (N, 4))."""
        means, rotations = surfels if surfels is not None else self.surfels[state]
        gaussians = self.model.gaussians
        if part != -1:
            gaussians, mask = self._part(part)
            means, rotations = means[mask], rotations[mask]
        return render(camera, gaussians, self.bg, means=means, rotations=rotations, backend=self.backend,
                      depth_ratio=self.depth_ratio)


def load_split(folder: Path, state: int, split: str, resolution: int, device: torch.device,
               white_background: bool = False) -> list[Camera]:
    """Cameras with images of one state and split; a missing test split is logged and gives no cameras."""
    if split == "test" and not transforms_path(folder, state, split).is_file():
        log.warning("%s is missing: no %s test views", transforms_path(folder, state, split), STATES[state])
        return []
    return [cam.to(device) for cam in load_cameras(folder, state, split, resolution,
                                                  white_background=white_background)]


def render_split(renderer: Renderer, cameras: list[Camera], state: int, out: Path, write: bool,
                 threshold: float) -> list[View]:
    """Render one state's cameras; write renders/parts/depth/normal PNGs when `write`; return the views."""
    views = []
    split = cameras[0].split if cameras else ""
    for cam in tqdm(cameras, desc=f"render {STATES[state]} {split}", leave=False):
        result = renderer(cam, state)
        alpha = result["alpha"][0]
        if write:
            sub = Path(STATES[state]) / split / f"{cam.image_name}.png"
            write_png(out / "renders" / sub, to_uint8(result["render"]))
            write_png(out / "parts" / sub, part_image(result["features"], alpha, threshold))
            write_png(out / "depth" / sub, depth_image(result["depth"][0], alpha, threshold))
            write_png(out / "normal" / sub, normal_image(result["rend_normal"], alpha, threshold))
        views.append(View(cam, result["depth"][0], alpha, result["render"]))
    return views


def orbit_cameras(reference: list[Camera], centre: np.ndarray, count: int, elevation_deg: float) -> list[Camera]:
    """`count` cameras on a circle around `centre` at the training cameras' mean distance, `elevation_deg` above
    the horizon; "up" is the training cameras' mean up direction, intrinsics those of the first training camera."""
    w2c = torch.stack([cam.world_to_cam for cam in reference]).double().cpu().numpy()
    up = -w2c[:, 1, :3].mean(axis=0)
    up /= np.linalg.norm(up)
    centres = np.stack([cam.camera_center.double().cpu().numpy() for cam in reference])
    radius = float(np.linalg.norm(centres - centre, axis=1).mean())
    side = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    side /= np.linalg.norm(side)
    ahead = np.cross(up, side)
    elevation = np.radians(elevation_deg)
    first = reference[0]
    cameras = []
    for i in range(count):
        azimuth = 2.0 * np.pi * i / count
        direction = np.cos(elevation) * (np.cos(azimuth) * side + np.sin(azimuth) * ahead) + np.sin(elevation) * up
        matrix = look_at_w2c(centre + radius * direction, centre, up)
        cameras.append(Camera(uid=i, state=first.state, split="orbit", image_name=f"{i:04d}", width=first.width,
                              height=first.height, fx=first.fx, fy=first.fy, cx=first.cx, cy=first.cy,
                              world_to_cam=torch.tensor(matrix, dtype=torch.float32, device=first.device)))
    return cameras


def write_orbit(renderer: Renderer, cameras: list[Camera], path: Path, threshold: float) -> None:
    """orbit.gif: [RGB | parts] per orbit camera while the object moves start -> end -> start."""
    frames = []
    for i, cam in enumerate(tqdm(cameras, desc="orbit", leave=False)):
        fraction = 1.0 - abs(1.0 - 2.0 * i / len(cameras))
        result = renderer(cam, 0, surfels=renderer.model.surfels_between(fraction))
        frames.append(np.concatenate([to_uint8(result["render"]),
                                      part_image(result["features"], result["alpha"][0], threshold)], axis=1))
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, np.stack(frames), duration=ORBIT_FRAME_MS, loop=0)


# -------------------------------------------------------------------------------------------------------- meshes
def robust_bounds(points: Tensor, pad: float) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of `points` (M, 3) without the outer BOUNDS_QUANTILE on each side, padded by BOUNDS_MARGIN x the
    largest side plus `pad`."""
    pts = points.detach().double().cpu()
    q = torch.tensor([BOUNDS_QUANTILE, 1.0 - BOUNDS_QUANTILE], dtype=pts.dtype)
    corners = torch.quantile(pts, q, dim=0) if len(pts) > 1 else torch.cat([pts, pts])
    lo, hi = default_bounds(corners, BOUNDS_MARGIN)
    return lo - pad, hi + pad


def fuse(views: list[View], bounds: tuple[np.ndarray, np.ndarray], voxel: float, trunc: float | None,
         threshold: float, min_area: float | None) -> trimesh.Trimesh:
    """TSDF fusion of rendered views (pixels with alpha > threshold; the rest carves empty space) and meshing; with
    `min_area`, only the connected components of at least that fraction of the largest one's area are kept."""
    volume = TSDFVolume(*bounds, voxel_size=voxel, trunc=trunc, device=views[0].depth.device)
    for view in views:
        volume.integrate(view.depth, view.camera.K, view.camera.world_to_cam, weight_mask=view.alpha > threshold,
                         color=view.rgb.clamp(0.0, 1.0), carve_empty=True)
    mesh = volume.extract_mesh()
    if min_area is not None and len(mesh.faces):
        mesh = keep_large_components(mesh, min_area)
    return mesh


def part_names(num_parts: int) -> dict[str, int]:
    """Mesh name -> part index: whole -1, static 0, part_k k."""
    return {"whole": -1, "static": 0, **{f"part_{k}": k for k in range(1, num_parts)}}


def render_part(renderer: Renderer, cameras: list[Camera], state: int, part: int, what: str) -> list[View]:
    """Views of only the surfels of `part` in `state`."""
    views = []
    for cam in tqdm(cameras, desc=f"mesh {what}", leave=False):
        result = renderer(cam, state, part)
        views.append(View(cam, result["depth"][0], result["alpha"][0], result["render"]))
    return views


def build_meshes(renderer: Renderer, cameras: dict[int, list[Camera]], cached: dict[int, list[View]],
                 args: RenderConfig) -> dict[str, trimesh.Trimesh]:
    """Fuse the meshes `<state>_<part>` of both states and every part; returns them by name."""
    model = renderer.model
    opaque = model.gaussians.get_opacity >= OPAQUE
    voxel = args.tsdf_voxel_size
    if voxel == 0.0:
        lo, hi = robust_bounds(torch.cat([renderer.surfels[s][0][opaque] for s in (0, 1)]), 0.0)
        voxel = float((hi - lo).max()) / VOXELS_PER_SIDE
    trunc = args.tsdf_trunc or None
    pad = (args.tsdf_trunc or 4.0 * voxel) + voxel
    meshes = {}
    for state in (0, 1):
        for name, part in part_names(model.num_parts).items():
            mask = model.part_mask(part)
            points = renderer.surfels[state][0][mask & opaque]
            key = f"{STATES[state]}_{name}"
            if len(points) == 0:
                log.warning("%s: no opaque surfels of part %s; its mesh is empty", key, name)
                meshes[key] = trimesh.Trimesh()
            else:
                bounds = (np.array(args.tsdf_bounds[:3]), np.array(args.tsdf_bounds[3:])) if args.tsdf_bounds \
                    else robust_bounds(points, pad)
                views = cached[state] if part == -1 and cached.get(state) else \
                    render_part(renderer, cameras[state], state, part, key)
                min_area = (WHOLE_MIN_AREA if part == -1 else 1.0) if args.keep_largest else None
                meshes[key] = fuse(views, bounds, voxel, trunc, args.alpha_threshold, min_area)
    log.info("meshes: voxel %.4g, %s", voxel, ", ".join(f"{k} {len(m.faces)} faces" for k, m in meshes.items()))
    return meshes


# ------------------------------------------------------------------------------------------------ exports/metrics
def write_exports(model: TrainedModel, scene: str, out: Path, meshes: dict[str, trimesh.Trimesh] | None,
                  config: ExportConfig) -> tuple[list[dict], dict[str, trimesh.Trimesh] | None]:
    """joint_info.json and, with `meshes`, the meshes and simulator exports (evaluation/export.py); returns the
    start -> end joints and the meshes as written (decimated)."""
    joints = model.joints_start_to_end()
    write_json(out / "joint_info.json", {"joints": joints, "larger_motion_state": model.canonical_state})
    return joints, None if meshes is None else export_twin(out, scene, joints, meshes, config)


def area_centroid(mesh: trimesh.Trimesh) -> np.ndarray:
    """(3,) area-weighted centroid of a mesh's surface."""
    return (mesh.triangles_center * mesh.area_faces[:, None]).sum(0) / mesh.area


def part_centres(model: TrainedModel, start_means: Tensor, gt_meshes: dict[str, trimesh.Trimesh],
                 count: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Start-state centres (count, 3) of the predicted movable parts (surfel mean) and of the GT parts (mesh
    centroid), to tell apart parts with alike joints; (None, None) when a part is missing on either side."""
    ids = model.part_ids
    pred, gt = [], []
    for k in range(1, model.num_parts):
        if not bool((ids == k).any()):
            return None, None
        pred.append(start_means[ids == k].mean(0).double().cpu().numpy())
    for i in range(count):
        mesh = gt_meshes.get(f"start_part_{i + 1}")
        if mesh is None:
            return None, None
        gt.append(area_centroid(mesh))
    return np.stack(pred), np.stack(gt)


def evaluate(folder: Path, model: TrainedModel, start_means: Tensor, opaque: Tensor, joints: list[dict],
             meshes: dict[str, trimesh.Trimesh] | None, test_views: list[tuple[Tensor, Tensor, str]],
             samples: int, geometry: bool) -> dict:
    """evaluation.metrics.summarise of the joint and mesh errors and the part labels of the `opaque` (N,) surfels (when
    `geometry` and gt/ exists) and PSNR/SSIM (of the `test_views` (render, ground truth, state name), overall and per
    state)."""
    gt_dir = folder / "gt"
    joint_metrics = mesh_metrics = part_metrics = None
    if geometry and gt_dir.is_dir():
        gt_meshes = load_gt_meshes(gt_dir)
        pairs = None
        if (gt_dir / "trans.json").is_file():
            gt_joints = load_gt_joints(gt_dir / "trans.json")
            centres = part_centres(model, start_means, gt_meshes, len(gt_joints))
            joint_metrics = evaluate_joints(joints, gt_joints, *centres)
            pairs = mesh_part_pairs(joint_metrics["matched"], joints)
        if meshes is not None and gt_meshes:
            mesh_metrics = evaluate_meshes(meshes, gt_meshes, pairs, n_samples=samples)
        part_metrics = evaluate_part_labels(model.gaussians.get_xyz[opaque].detach().cpu().numpy(),
                                            model.part_ids[opaque].cpu().numpy(), gt_meshes,
                                            STATES[model.canonical_state], pairs)
    elif geometry:
        log.info("%s does not exist: joint, mesh and part-label metrics are null", gt_dir)
    images = evaluate_images(*zip(*test_views)) if test_views else None
    return summarise(joint_metrics, mesh_metrics, images, part_metrics)


# ----------------------------------------------------------------------------------------------------------- run
def run(args: RenderConfig) -> dict:
    """Stage 5 for one scene; returns the summary of metrics.json (or {} when no metrics are computed)."""
    start = time.perf_counter()
    folder = args.scene_dir
    if not folder.is_dir():
        raise DatasetError(f"scene folder {folder} does not exist")
    device = pick_device(args.data_device)
    timer = PhaseTimer(device)
    model = TrainedModel.load(args.model_path, args.iteration, device)
    opaque = model.gaussians.get_opacity >= OPAQUE
    if not bool(opaque.any()):
        raise ValueError(f"{model.folder}: no surfel has opacity >= {OPAQUE}; there is nothing to render")
    bg = torch.full((3,), 1.0 if args.white_background else 0.0, device=device)
    renderer = Renderer(model, bg, args.backend_name, args.depth_ratio)
    threshold = args.alpha_threshold
    train = {s: load_split(folder, s, "train", args.resolution, device, args.white_background) for s in (0, 1)}
    tests = {s: [] if args.skip_test else load_split(folder, s, "test", args.resolution, device,
                                                      args.white_background) for s in (0, 1)}
    out = fresh_eval_folder(Path(args.model_path))  # the inputs are checked: write into a fresh folder
    timer.mark("load")
    cached = {s: render_split(renderer, train[s], s, out, True, threshold) for s in (0, 1)} \
        if not args.skip_train else {}
    timer.mark("train views")
    test_views = []
    for state in () if args.skip_test else (0, 1):
        cams = tests[state]
        views = render_split(renderer, cams, state, out, True, threshold)
        test_views += [(view.rgb.cpu(), cam.composite(bg).cpu(), STATES[state]) for view, cam in zip(views, cams)]
    timer.mark("test views")
    centre = robust_bounds(torch.cat([renderer.surfels[s][0][opaque] for s in (0, 1)]), 0.0)
    orbit = orbit_cameras(train[0], (centre[0] + centre[1]) / 2.0, args.orbit_frames, args.orbit_elevation) \
        if args.orbit_frames or args.mesh_views != "train" else []
    if args.orbit_frames:
        write_orbit(renderer, orbit, out / "orbit.gif", threshold)
        timer.mark("orbit")
    meshes = None
    if not args.skip_mesh:
        mesh_cams = {s: {"train": train[s], "orbit": orbit, "both": train[s] + orbit}[args.mesh_views] for s in (0, 1)}
        meshes = build_meshes(renderer, mesh_cams, cached if args.mesh_views == "train" else {}, args)
        timer.mark("meshes")
    joints, meshes = write_exports(model, args.scene_name, out, meshes, ExportConfig.from_args(args))
    timer.mark("exports")
    summary = {}
    if args.mode == "eval" or args.eval_app:
        metrics = evaluate(folder, model, renderer.surfels[0][0], opaque, joints, meshes, test_views,
                           args.chamfer_samples, geometry=args.mode == "eval")
        timer.mark("metrics")
        metrics = {"scene": args.scene_name, "dataset": args.dataset, "subset": args.subset,
                   "model_path": str(args.model_path), "iteration": model.iteration,
                   "canonical_state": model.canonical_state, **metrics, "seconds": timer.seconds,
                   "peak_gpu_memory_gib": peak_gpu_memory_gib(device)}
        write_json(out / "metrics.json", metrics)
        write_result_csv(out / "result.csv", metrics, scene=args.scene_name)
        summary = metrics["summary"]
    out = swap_in_eval(Path(args.model_path))
    num_train = sum(len(views) for views in cached.values())
    numbers = ", ".join(f"{k} {summary[k]:.4g}" for k in HEADLINE_KEYS if summary.get(k) is not None)
    print(f"[render] {args.scene_name}: iteration {model.iteration}, {num_train} train + {len(test_views)} test "
          f"views, {0 if meshes is None else len(meshes)} meshes, {len(joints)} joints"
          f"{'; ' + numbers if numbers else ''}; {time.perf_counter() - start:.1f} s ({timer.summary()}) -> {out}")
    return summary


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    args = parse_args(argv)
    try:
        run(args)
    except ModelNotFoundError as err:
        hint = TRAIN_HINT.format(dataset=args.dataset, subset=args.subset, scene=args.scene_name,
                                 model_path=args.model_path)
        print(f"error: {err}; {hint}", file=sys.stderr)
        return 2
    except (DatasetError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
