"""Stage 3: the movable parts of the two coarse models, their initial motions and joint types.

    python voxelize.py --source_path data --dataset gear --subset synthetic --scene_name storage \
        --coarse_iter 30000 [--num_parts K] [--joint_types s,p,p,r,r]

Reads stage 2's iteration folder `<output_root>/<dataset>/<subset>/<scene>/<coarse_name>/point_cloud/iteration_<N>/`
(`surface_points_{0,1}.ply`, the rendered surfaces — without them the opaque centres of `point_cloud_{0,1}.ply` —
and `larger_motion_state.txt`) and the scene's training cameras and silhouettes (`<source_path>/<dataset>/<subset>/
<scene>/`), and writes next to the coarse models:

    joint_voxel_info.json   grid, canonical state, per part: voxels, matched voxels, transform, joint, joint type and
                            where it came from ("evidence" or "given"), fits of both types; candidates not kept with
                            their size and reason; settings and seconds
    joint_voxel_info.npz    int32 voxel indices: static_voxels, part_<k>_voxels, part_<k>_matched_voxels; transforms
                            (K-1, 4, 4) canonical -> other; grid_origin, voxel_size, larger_motion_state

The algorithm is `parts.discover` (docs/ARCHITECTURE.md, "Stage 3"). Every transform maps the canonical state c (the
larger-motion state) to the other state o. Voxel `index` (i, j, k) has its centre at `grid_origin + (index + 0.5) *
voxel_size`. Movable parts are numbered 1..K-1 (part 0 is the static body). The part count and the joint types are
found from the evidence unless `--num_parts` / `--joint_types` (or `arguments/joint_types.json`, which lists the
PARIS scenes' types as the papers' tables give them) fix them; given types are a multiset for the object, assigned to
the parts they fit best, and stage 4 uses the types written here.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arguments import (JOINT_TYPES_FILE, VOXEL_SIZE, CoarseInput, SceneOptions, add_options, build,
                       listed_joint_types, new_parser, option, parse_joint_types)
from parts.discover import PartsConfig, PartsResult, discover_parts
from parts.observation import View
from scene.articulation import matrix_to_joint
from scene.cameras import Camera
from scene.contract import (JOINT_VOXEL_INFO_JSON, JOINT_VOXEL_INFO_NPZ, LARGER_MOTION_NAME, STAGE3_INSPECTION,
                            STAGE3_OUTPUTS, coarse_iteration_dir)
from scene.dataset_readers import DatasetError, load_cameras
from scene.gaussian_model import GaussianModel
from utils.io_utils import atomic_path, write_json
from utils.point_cloud import read_point_ply, write_point_ply

COARSE_HINT = "run stage 2 first: python coarse.py ... (or scripts/2_coarse.sh)"
SILHOUETTE_ALPHA = 0.5  # pixels of a training image with alpha above this are the object


@dataclass(frozen=True)
class VoxelizeConfig(SceneOptions, CoarseInput):
    """Stage 3: part discovery on the two coarse models."""

    scene_name: str = option("", "scene folder under --subset (required)", aliases=("--scenes",))
    coarse_iter: int = option(30_000, "the stage-2 iteration to read", aliases=("--iteration",))
    voxel_size: float = option(VOXEL_SIZE, "voxel edge in scene units: stage 3's resolution")
    min_part_area: float = option(PartsConfig.min_part_area, "moved surface (scene units^2) one more part must "
                                                             "explain: the model-selection penalty per part")
    num_parts: str = option("auto", "K including the static part, or 'auto' (chosen by model selection)")
    joint_types: str = option("auto", "'auto' (arguments/joint_types.json if it lists the scene, else found from "
                                      "the evidence) or a multiset such as s,p,p,r,r (static first)")
    opacity_threshold: float = option(0.5, "without surface_points_<state>.ply: Gaussians at least this opaque")
    seed: int = option(0, "seed of the random choices (chunks, samples)")
    save_ply: bool = option(False, "write coloured voxel PLYs for inspection")
    overwrite: bool = option(False, "redo a scene whose outputs exist (only stage 3's files are replaced)")


def parse_args(argv: list[str] | None) -> VoxelizeConfig:
    parser = new_parser("Stage 3: movable parts, initial motions and joint types from the two coarse models.")
    add_options(parser, VoxelizeConfig)
    args = parser.parse_args(argv)
    if not args.scene_name:
        parser.error("--scene_name is required")
    if args.num_parts != "auto" and not args.num_parts.isdigit():
        parser.error(f"--num_parts must be an integer or 'auto', got {args.num_parts!r}")
    try:
        parse_joint_types(args.joint_types)
    except ValueError as err:
        parser.error(str(err))
    if not args.voxel_size > 0 or not args.min_part_area > 0:
        parser.error("--voxel_size and --min_part_area must be positive")
    return build(VoxelizeConfig, args)


# ------------------------------------------------------------------------------------------------------ inputs
def read_larger_motion_state(folder: Path) -> int:
    """The canonical state (0 or 1) from `larger_motion_state.txt`; errors name the file."""
    path = folder / LARGER_MOTION_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; {COARSE_HINT}")
    text = path.read_text().strip()
    if text not in ("0", "1"):
        raise ValueError(f"{path} must hold 0 or 1, got {text!r}")
    return int(text)


def state_points(folder: Path, state: int, opacity_threshold: float) -> np.ndarray:
    """(N, 3) float64 surface points of one state: stage 2's rendered surface `surface_points_<state>.ply` when
    present (robust to how opacity is spread over the surfels), else the opaque surfel centres of its PLY."""
    surface = folder / f"surface_points_{state}.ply"
    if surface.is_file():
        points, _ = read_point_ply(surface)
        if len(points):
            return points.astype(np.float64)
    return opaque_centres(folder / f"point_cloud_{state}.ply", opacity_threshold)


def opaque_centres(path: Path, opacity_threshold: float) -> np.ndarray:
    """(N, 3) float64 centres of the Gaussians of a coarse PLY whose opacity reaches `opacity_threshold`."""
    if not path.is_file():
        raise FileNotFoundError(f"coarse model {path} is missing; {COARSE_HINT}")
    model = GaussianModel.load_ply(path)
    keep = (model.get_opacity >= opacity_threshold).detach().numpy()
    if not keep.any():
        raise ValueError(f"{path}: no Gaussian has opacity >= {opacity_threshold} (of {model.num_points}); "
                         "lower --opacity_threshold or check the coarse model")
    return model.get_xyz.detach().numpy()[keep].astype(np.float64)


def camera_view(camera: Camera) -> View:
    """Stage 3's view of a training camera: intrinsics, pose and silhouette."""
    K = np.array([[camera.fx, 0.0, camera.cx], [0.0, camera.fy, camera.cy], [0.0, 0.0, 1.0]])
    silhouette = None if camera.alpha is None else (camera.alpha[0] > SILHOUETTE_ALPHA).numpy()
    return View(K, camera.world_to_cam.double().numpy(), camera.width, camera.height, silhouette)


def state_views(config: VoxelizeConfig, state: int) -> list[View]:
    """The training views of one state (cameras and silhouettes; no depth)."""
    cameras = load_cameras(config.scene_dir, state, "train", load_depth=False,
                           white_background=config.white_background)
    return [camera_view(camera) for camera in cameras]


def parts_config(config: VoxelizeConfig) -> tuple[PartsConfig, str]:
    """Stage 3's discovery settings and where the joint types come from ('cli', the table file, or 'evidence')."""
    types, source = parse_joint_types(config.joint_types), "cli"
    if types is None:
        types, source = listed_joint_types(JOINT_TYPES_FILE, config.dataset, config.scene_name), JOINT_TYPES_FILE.name
    if types is None:
        source = "evidence"
    num_movable = None if config.num_parts == "auto" else int(config.num_parts) - 1
    if num_movable is not None and num_movable < 1:
        raise ValueError(f"--num_parts counts the static part too and must be at least 2, got {config.num_parts}")
    if types is not None and num_movable is not None and len(types) != num_movable:
        raise ValueError(f"--num_parts {config.num_parts} means {num_movable} movable parts but the joint types "
                         f"from {source} list {len(types)}: {list(types)}")
    return PartsConfig(voxel_size=config.voxel_size, min_part_area=config.min_part_area, num_movable=num_movable,
                       joint_types=types, seed=config.seed), source


# ------------------------------------------------------------------------------------------------------ outputs
def _finite(value: float) -> float | None:
    return round(float(value), 6) if np.isfinite(value) else None


def _matrix(T: np.ndarray) -> list[list[float]]:
    return [[float(v) for v in row] for row in T]


def summary(result: PartsResult, canonical: int, types_source: str, config: VoxelizeConfig, seconds: float) -> dict:
    """The `joint_voxel_info.json` dict."""
    parts = []
    for k, part in enumerate(result.parts, start=1):
        parts.append({
            "part": k,
            "canonical_voxels": int(len(part.voxels)),
            "matched_voxels": int(len(part.matched_voxels)),
            "transform": _matrix(part.transform),
            "rigid_transform": _matrix(part.rigid_transform),
            "joint": matrix_to_joint(part.transform, part.joint_type),
            "joint_type": part.joint_type,
            "type_source": part.type_source,
            "preferred_type": part.preferred_type,
            "fits": {name: {"bic": _finite(fit.bic), "residual": _finite(fit.residual),
                            "admissible": fit.admissible} for name, fit in part.fits.items()},
            "evidence": part.evidence,
            "split": part.split,
        })
    return {
        "voxel_size": result.grid.voxel_size,
        "grid_origin": [float(v) for v in result.grid.origin],
        "grid_shape": [int(n) for n in result.grid.shape],
        "index_to_world": "centre = grid_origin + (index + 0.5) * voxel_size",
        "larger_motion_state": canonical,
        "transform_direction": f"state {canonical} (canonical) -> state {1 - canonical}",
        "joint_types_source": types_source,
        "settings": {"voxel_size": config.voxel_size, "min_part_area": config.min_part_area,
                     "num_parts": config.num_parts, "joint_types": config.joint_types,
                     "opacity_threshold": config.opacity_threshold, "seed": config.seed},
        "static_voxels": int(len(result.static_voxels)),
        "parts": parts,
        "skipped": result.skipped,
        "stats": result.stats,
        "seconds": round(seconds, 3),
    }


def write_arrays(path: Path, result: PartsResult, canonical: int) -> None:
    """`joint_voxel_info.npz`: int32 voxel indices of the static part and of each part in both states, transforms."""
    arrays = {
        "static_voxels": result.static_voxels.astype(np.int32),
        "transforms": np.stack([p.transform for p in result.parts]).astype(np.float64),
        "grid_origin": result.grid.origin.astype(np.float64),
        "voxel_size": np.float64(result.grid.voxel_size),
        "larger_motion_state": np.int64(canonical),
    }
    for k, part in enumerate(result.parts, start=1):
        arrays[f"part_{k}_voxels"] = part.voxels.astype(np.int32)
        arrays[f"part_{k}_matched_voxels"] = part.matched_voxels.astype(np.int32)
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)


def write_inspection_plys(folder: Path, result: PartsResult) -> None:
    """Coloured voxel centres for inspection: static grey and parts in colour in the canonical state, and each
    part's matched voxels and its moved voxels (darker) in the other state."""
    grid = result.grid
    palette = np.array([[0.9, 0.2, 0.2], [0.2, 0.7, 0.2], [0.2, 0.4, 0.9], [0.9, 0.7, 0.1], [0.7, 0.2, 0.8],
                        [0.1, 0.8, 0.8]])
    canonical = [(grid.centres(result.static_voxels), np.full(3, 0.6))]
    other = []
    for k, part in enumerate(result.parts):
        colour = palette[k % len(palette)]
        canonical.append((grid.centres(part.voxels), colour))
        other.append((grid.centres(part.matched_voxels), colour))
        moved = grid.centres(part.voxels) @ part.transform[:3, :3].T + part.transform[:3, 3]
        other.append((moved, 0.5 * colour))
    for name, groups in zip(STAGE3_INSPECTION, (canonical, other)):
        points = np.concatenate([centres for centres, _ in groups])
        colours = np.concatenate([np.tile(colour, (len(centres), 1)) for centres, colour in groups])
        write_point_ply(folder / name, points, colours)


def report(scene: str, info: dict, path: Path) -> None:
    """One line per part, per candidate not kept, and a summary line."""
    for part in info["parts"]:
        joint = part["joint"]
        amount = f"{joint['motion']:.1f} deg" if joint["type"] == "revolute" else f"{joint['motion']:.3f}"
        print(f"[voxelize] {scene} part {part['part']}: {part['canonical_voxels']} voxels, {part['joint_type']} "
              f"({part['type_source']}), {amount} c->o")
    for skipped in info["skipped"]:
        print(f"[voxelize] {scene}: not kept: {skipped['candidate']} of {skipped['samples']} samples: "
              f"{skipped['reason']}")
    for conflict in info["stats"].get("type_conflicts", []):
        print(f"[voxelize] {scene}: warning: {conflict}", file=sys.stderr)
    print(f"[voxelize] {scene}: {len(info['parts'])} movable parts, {info['static_voxels']} static voxels, "
          f"{info['seconds']:.1f} s -> {path}")


# ---------------------------------------------------------------------------------------------------------- run
def voxelize_scene(config: VoxelizeConfig) -> dict | None:
    """Run stage 3 for the scene; returns its summary, or None when its outputs exist and --overwrite is off."""
    scene = config.scene_name
    folder = coarse_iteration_dir(config.output_dir, config.coarse_name, config.coarse_iter)
    if not folder.is_dir():
        raise FileNotFoundError(f"coarse output folder {folder} does not exist; {COARSE_HINT}")
    if not config.overwrite and all((folder / name).is_file() for name in STAGE3_OUTPUTS):
        print(f"[voxelize] {scene}: {folder / JOINT_VOXEL_INFO_JSON} exists, skipping (pass --overwrite to redo)")
        return None
    start = time.perf_counter()
    canonical = read_larger_motion_state(folder)
    parts_settings, types_source = parts_config(config)
    states = [state_points(folder, s, config.opacity_threshold) for s in (0, 1)]
    views = [state_views(config, s) for s in (0, 1)]
    try:
        result = discover_parts(states[canonical], views[canonical], states[1 - canonical], views[1 - canonical],
                                parts_settings)
    except ValueError as err:
        raise ValueError(f"scene {scene} ({folder}): {err}") from err
    info = summary(result, canonical, types_source, config, time.perf_counter() - start)
    write_arrays(folder / JOINT_VOXEL_INFO_NPZ, result, canonical)
    write_json(folder / JOINT_VOXEL_INFO_JSON, info)
    if config.save_ply:
        write_inspection_plys(folder, result)
    report(scene, info, folder / JOINT_VOXEL_INFO_JSON)
    return info


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        voxelize_scene(config)
    except (FileNotFoundError, ValueError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
