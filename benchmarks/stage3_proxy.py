"""Stage 3 alone on a perfect coarse model: its joint errors on every suite object, on the CPU in about a minute.

    python benchmarks/stage3_proxy.py [--data_root data] [--scenes drawers storage] [--seed N]

A coarse model that renders its training views perfectly has the ground-truth depth as its rendered surface, so
each state's input here is the back-projected depth of its training views, voxel-downsampled at 5 mm as stage 2's
`surface_points_<state>.ply` is. Stage 3 (`utils.part_selection.discover_parts`, default settings) runs with the
object's joint types given, as in the suite; the table is `benchmarks/joint_errors.py`'s. What this leaves out is
the coarse models' own error, so it isolates stage 3's part discovery (cabinet: 0.891° / 0.0027 / 0.98° here, 0.890° /
0.0032 / 1.10° from the device's 6000-iteration coarse models of the 2026-11-30 suite run). Reads `gt/` for the
types and the errors only.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arguments import parse_joint_types  # noqa: E402
from benchmarks.joint_errors import HEADER, table_row  # noqa: E402
from benchmarks.run_suite import DATASET, SUITE, given_joint_types, suite_subset  # noqa: E402
from evaluation.metrics import load_gt_joints  # noqa: E402
from scene.articulation import joint_start_to_end, matrix_to_joint  # noqa: E402
from scene.dataset_readers import load_cameras  # noqa: E402
from utils.motion_state import DEFAULT_VOXEL_SIZE  # noqa: E402
from utils.part_selection import VoxelizeConfig, discover_parts  # noqa: E402
from utils.point_cloud import backproject_depth, voxel_downsample  # noqa: E402


def visible_surface(scene: Path, state: int) -> np.ndarray:
    """(M, 3) back-projected training depth of one state at stage 2's surface spacing."""
    points, colours = backproject_depth(load_cameras(scene, state, "train"))
    return voxel_downsample(points, colours, DEFAULT_VOXEL_SIZE / 2)[0].astype(np.float64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_root", default="data")
    parser.add_argument("--scenes", nargs="+", default=list(SUITE), choices=list(SUITE))
    parser.add_argument("--seed", type=int, default=0, help="the suite's held-out objects of this seed (run_suite.py)")
    args = parser.parse_args(argv)
    subset = suite_subset(args.seed)
    lines = list(HEADER)
    for name in args.scenes:
        scene = Path(args.data_root) / DATASET / subset / name
        canonical = 1 if SUITE[name] == "end" else 0  # the suite opens its parts in this state
        types = parse_joint_types(given_joint_types(scene))
        begin = time.perf_counter()
        result = discover_parts(visible_surface(scene, canonical), visible_surface(scene, 1 - canonical),
                                VoxelizeConfig(num_movable=len(types), joint_types=types))
        joints = [joint_start_to_end(matrix_to_joint(part.transform, part.joint_type), canonical)
                  for part in result.parts]
        lines.append(table_row(name, f"3 on GT depth ({time.perf_counter() - begin:.0f} s)", joints,
                               load_gt_joints(scene / "gt" / "trans.json")))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
