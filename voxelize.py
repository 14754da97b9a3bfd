"""Stage 3: Top-K dynamic voxel components of the two coarse models, matched across states, with initial motions.

    python voxelize.py --dataset gear --subset synthetic --scenes cabinet fridge --coarse_name coarse_gs \
        --iteration 30000 --voxel_size 0.01 --dilation_radius 1 --num_parts auto --joint_types auto

Reads `<output_root>/<dataset>/<subset>/<scene>/<coarse_name>/point_cloud/iteration_<N>/` (stage 2:
`surface_points_{0,1}.ply` — the rendered surfaces; without them the opaque centres of `point_cloud_{0,1}.ply` —
and `larger_motion_state.txt`) and writes next to them
`joint_voxel_info.json` and `joint_voxel_info.npz` (DESIGN.md §5 stage 3; the algorithm and its selection rule are
in `utils/part_selection.py`). Every transform maps the canonical state c (the larger-motion state) to the other
state o. Voxel `index` (i, j, k) has its centre at `grid_origin + (index + 0.5) * voxel_size`. Movable parts are
numbered 1..K-1 (part 0 is the static body).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from arguments import JOINT_TYPES_FILE, iteration_dir, listed_joint_types, parse_joint_types
from scene.articulation import matrix_to_joint
from scene.gaussian_model import GaussianModel
from utils.io_utils import atomic_path, write_json
from utils.part_selection import METHODS, VoxelizeConfig, VoxelizeResult, discover_parts
from utils.point_cloud import read_point_ply, write_point_ply

OUTPUT_NAMES = ("joint_voxel_info.json", "joint_voxel_info.npz")
COARSE_HINT = "run stage 2 first: python coarse.py ... (or scripts/2_coarse.sh)"


def coarse_dir(args: argparse.Namespace, scene: str) -> Path:
    """The stage-2 iteration folder of `scene`, where stage 3 reads and writes."""
    return iteration_dir(Path(args.output_root) / args.dataset / args.subset / scene / args.coarse_name, args.iteration)


def read_larger_motion_state(folder: Path) -> int:
    """The canonical state (0 or 1) from `larger_motion_state.txt`; errors name the file."""
    path = folder / "larger_motion_state.txt"
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


def scene_config(args: argparse.Namespace, scene: str) -> tuple[VoxelizeConfig, str]:
    """Stage-3 settings of `scene` and where its joint types come from ('cli', the table file, or 'guess')."""
    types, source = parse_joint_types(args.joint_types), "cli"
    if types is None:
        types, source = listed_joint_types(JOINT_TYPES_FILE, args.dataset, scene), JOINT_TYPES_FILE.name
    if types is None:
        source = "guess"
    num_movable = None if args.num_parts == "auto" else int(args.num_parts) - 1
    if num_movable is not None and num_movable < 1:
        raise ValueError(f"--num_parts counts the static part too and must be at least 2, got {args.num_parts}")
    if types is not None and num_movable is not None and len(types) != num_movable:
        raise ValueError(f"--num_parts {args.num_parts} means {num_movable} movable parts but the joint types from "
                         f"{source} list {len(types)}: {list(types)}")
    if types is not None:
        num_movable = len(types)
    config = VoxelizeConfig(voxel_size=args.voxel_size, dilation_radius=args.dilation_radius,
                            num_movable=num_movable, joint_types=types, method=args.method, seed=args.seed)
    return config, source


def _matrix(T: np.ndarray) -> list[list[float]]:
    return [[float(v) for v in row] for row in T]


def summary(result: VoxelizeResult, canonical: int, types_source: str, args: argparse.Namespace,
            seconds: float) -> dict:
    """The `joint_voxel_info.json` dict."""
    parts = []
    for k, part in enumerate(result.parts, start=1):
        parts.append({
            "part": k,
            "canonical_voxels": int(len(part.voxels)),
            "source_component": part.source,
            "attached_components": part.attached,
            "matched_component": part.matched_component,
            "matched_voxels": int(len(part.matched_voxels)),
            "transform": _matrix(part.transform),
            "rigid_transform": _matrix(part.rigid_transform),
            "joint": matrix_to_joint(part.transform, part.joint_type),
            "overlap": part.overlap,
            "joint_type": part.joint_type,
            "type_source": part.type_source,
            "type_guess": part.type_guess,
            "residuals": part.residuals,
            "model_overlaps": part.model_overlaps,
            "weak": part.weak,
            "split": part.split,
        })
    return {
        "voxel_size": result.grid.voxel_size,
        "grid_origin": [float(v) for v in result.grid.origin],
        "grid_shape": list(result.grid.shape),
        "index_to_world": "centre = grid_origin + (index + 0.5) * voxel_size",
        "larger_motion_state": canonical,
        "transform_direction": f"state {canonical} (canonical) -> state {1 - canonical}",
        "method": result.method,
        "dilation_radius": args.dilation_radius,
        "opacity_threshold": args.opacity_threshold,
        "joint_types_source": types_source,
        "num_points": {"canonical": int(len(result.canonical.points)), "other": int(len(result.other.points))},
        "static_voxels": int(len(result.static)),
        "parts": parts,
        "skipped": result.skipped,
        "seconds": seconds,
    }


def write_arrays(path: Path, result: VoxelizeResult, canonical: int) -> None:
    """`joint_voxel_info.npz`: int32 voxel indices of the static part and of each part in both states, transforms."""
    arrays = {
        "static_voxels": result.static.astype(np.int32),
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


def write_inspection_plys(folder: Path, result: VoxelizeResult) -> None:
    """Coloured voxel centres for inspection: static grey and parts in colour in the canonical state
    (`voxel_parts_canonical.ply`), and each part's matched voxels and its moved voxels in the other state
    (`voxel_parts_other.ply`, moved voxels darker)."""
    grid = result.grid
    palette = np.array([[0.9, 0.2, 0.2], [0.2, 0.7, 0.2], [0.2, 0.4, 0.9], [0.9, 0.7, 0.1], [0.7, 0.2, 0.8],
                        [0.1, 0.8, 0.8]])
    canonical = [(grid.centres(result.static), np.full(3, 0.6))]
    other = []
    for k, part in enumerate(result.parts):
        colour = palette[k % len(palette)]
        canonical.append((grid.centres(part.voxels), colour))
        other.append((grid.centres(part.matched_voxels), colour))
        moved = grid.centres(part.voxels) @ part.transform[:3, :3].T + part.transform[:3, 3]
        other.append((moved, 0.5 * colour))
    for name, groups in (("voxel_parts_canonical.ply", canonical), ("voxel_parts_other.ply", other)):
        points = np.concatenate([centres for centres, _ in groups])
        colours = np.concatenate([np.tile(colour, (len(centres), 1)) for centres, colour in groups])
        write_point_ply(folder / name, points, colours)


def voxelize_scene(args: argparse.Namespace, scene: str) -> dict | None:
    """Run stage 3 for one scene; returns its summary, or None when its outputs exist and --overwrite is off."""
    folder = coarse_dir(args, scene)
    if not folder.is_dir():
        raise FileNotFoundError(f"coarse output folder {folder} does not exist; {COARSE_HINT}")
    if not args.overwrite and all((folder / name).is_file() for name in OUTPUT_NAMES):
        print(f"[voxelize] {scene}: {folder / OUTPUT_NAMES[0]} exists, skipping (pass --overwrite to redo)")
        return None
    start = time.perf_counter()
    canonical = read_larger_motion_state(folder)
    states = [state_points(folder, s, args.opacity_threshold) for s in (0, 1)]
    config, types_source = scene_config(args, scene)
    try:
        result = discover_parts(states[canonical], states[1 - canonical], config)
    except ValueError as err:
        raise ValueError(f"scene {scene} ({folder}): {err}") from err
    info = summary(result, canonical, types_source, args, time.perf_counter() - start)
    write_arrays(folder / OUTPUT_NAMES[1], result, canonical)
    write_json(folder / OUTPUT_NAMES[0], info)
    if args.save_ply:
        write_inspection_plys(folder, result)
    for part in info["parts"]:
        joint = part["joint"]
        amount = f"{joint['motion']:.1f} deg" if joint["type"] == "revolute" else f"{joint['motion']:.3f}"
        flags = "".join(f" {name.upper()}" for name in ("weak", "split") if part[name])
        print(f"[voxelize] {scene} part {part['part']}: {part['canonical_voxels']} voxels, {part['joint_type']} "
              f"({part['type_source']}), {amount} c->o, overlap {part['overlap']:.2f}{flags}")
    print(f"[voxelize] {scene}: {len(info['parts'])} movable parts, {info['static_voxels']} static voxels, "
          f"{info['seconds']:.1f} s -> {folder / OUTPUT_NAMES[0]}")
    return info


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Stage 3: dynamic voxel components and initial part motions.")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--subset", required=True)
    parser.add_argument("--scenes", nargs="+", required=True)
    parser.add_argument("--output_root", default="outputs")
    parser.add_argument("--coarse_name", default="coarse_gs")
    parser.add_argument("--iteration", type=int, default=30000)
    parser.add_argument("--voxel_size", type=float, default=0.01)
    parser.add_argument("--dilation_radius", type=int, default=1, help="Chebyshev radius of the static dilation")
    parser.add_argument("--num_parts", default="auto", help="K including the static part, or 'auto'")
    parser.add_argument("--joint_types", default="auto",
                        help="'auto' (arguments/joint_types.json if it lists the scene, else guessed) or e.g. s,r,p")
    parser.add_argument("--opacity_threshold", type=float, default=0.5)
    parser.add_argument("--method", choices=METHODS, default="refined",
                        help="refined (ours) or plane (the paper's plane-intersection estimate)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save_ply", action="store_true", help="write coloured voxel PLYs for inspection")
    parser.add_argument("--overwrite", action="store_true", help="redo scenes whose outputs exist")
    args = parser.parse_args(argv)
    if args.num_parts != "auto" and not args.num_parts.isdigit():
        parser.error(f"--num_parts must be an integer or 'auto', got {args.num_parts!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for scene in args.scenes:
        try:
            voxelize_scene(args, scene)
        except (FileNotFoundError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
