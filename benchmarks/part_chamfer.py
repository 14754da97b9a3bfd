"""How well stage 3's part voxels cut out each movable part: a Chamfer distance per part, without stages 4 and 5.

    python benchmarks/part_chamfer.py --output_root outputs --data_root data [--subset suite] [--scenes drawers]

For each scene, stage 2's canonical surface points (`surface_points_<c>.ply`) that fall in a part's voxels of
stage 3's `joint_voxel_info.npz` (the highest iteration present) are compared with the ground-truth part meshes of
the canonical state (`gt/<start|end>/<state>_dynamic_<i>_rotate.ply`): Chamfer ×1000 as stage 5 computes it (mean
squared nearest distance of 10k samples each way), each part against the ground-truth part it is closest to, with
its two directions: "pred->gt" grows with voxels of other parts or the body, "gt->pred" with what the part misses.
Stage 4 starts its part logits from these voxels and keeps what no image tells apart, so this tracks stage 5's part
meshes of drawers, whose trays no image assigns (64 / 57 / 59 here against 67 / 34 / 16 from stage 5, same device
run, commit 442f1fb), but not of doors, which stage 4 cleans up (the storage unit's: 9.3 / 21.6 here, 0.05 after).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import numpy as np
import trimesh
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

importlib.import_module("scene")  # utils.point_cloud and scene import each other: scene first
from benchmarks.joint_errors import add_run_arguments, latest, run_scenes  # noqa: E402
from utils.io_utils import read_json  # noqa: E402
from utils.point_cloud import read_point_ply  # noqa: E402
from utils.voxel_grid import VoxelGrid  # noqa: E402

SAMPLES = 10_000


def part_chamfers(folder: Path, gt_dir: Path, seed: int = 0) -> list[tuple[int, int, float, float]]:
    """(part, closest GT part, pred->gt, gt->pred) per part of the stage-3 results in `folder` (an iteration folder)
    against the ground-truth meshes in `gt_dir` (a scene's `gt/`)."""
    info = read_json(folder / "joint_voxel_info.json", "stage-3 joint_voxel_info")
    canonical = int(info["larger_motion_state"])
    points = read_point_ply(folder / f"surface_points_{canonical}.ply")[0].astype(np.float64)
    state = "end" if canonical == 1 else "start"
    rng = np.random.default_rng(seed)
    meshes = sorted((gt_dir / state).glob(f"{state}_dynamic_*_rotate.ply"))
    gts = [trimesh.sample.sample_surface(trimesh.load(path, force="mesh"), SAMPLES, seed=seed)[0] for path in meshes]
    with np.load(folder / "joint_voxel_info.npz") as arrays:
        grid = VoxelGrid(arrays["grid_origin"], float(arrays["voxel_size"]), tuple(info["grid_shape"]))
        voxels = [arrays[f"part_{k}_voxels"] for k in range(1, len(info["parts"]) + 1)]
    cells = grid.indices(points)
    rows = []
    for k, part in enumerate(voxels, start=1):
        inside = points[grid.lookup(grid.mask(part), cells)]
        if len(inside) == 0:
            rows.append((k, -1, float("inf"), float("inf")))
            continue
        inside = inside[rng.choice(len(inside), min(SAMPLES, len(inside)), replace=False)]
        pairs = [(np.mean(cKDTree(gt).query(inside)[0] ** 2) * 1000, np.mean(cKDTree(inside).query(gt)[0] ** 2) * 1000)
                 for gt in gts]
        best = int(np.argmin([a + b for a, b in pairs]))
        rows.append((k, best, float(pairs[best][0]), float(pairs[best][1])))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser)
    parser.add_argument("--scenes", nargs="*", help="default: every scene of the run")
    args = parser.parse_args(argv)
    root, found = run_scenes(args)
    names = args.scenes or found
    if not names:
        print(f"error: no scene with a coarse_gs folder under {root}", file=sys.stderr)
        return 2
    print("| Scene | Part | GT part | pred->gt | gt->pred | Chamfer |\n|---|---:|---:|---:|---:|---:|")
    for name in names:
        result = latest(root / name / "coarse_gs" / "point_cloud", "joint_voxel_info.json")
        if result is None:
            print(f"| {name} | missing | | | | |")
            continue
        for k, gt, a, b in part_chamfers(result.parent, Path(args.data_root) / args.dataset / args.subset / name / "gt"):
            print(f"| {name} | {k} | {gt + 1} | {a:.2f} | {b:.2f} | {a + b:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
