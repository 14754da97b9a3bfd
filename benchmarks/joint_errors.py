"""Joint errors of stage 3 (initial motions) and stage 4 (refined joints) against ground truth, per scene.

    python benchmarks/joint_errors.py --output_root outputs --data_root data --dataset gear --subset suite

Reads `<output_root>/<dataset>/<subset>/<scene>/coarse_gs/point_cloud/iteration_<N>/joint_voxel_info.json` and
`.../gear/point_cloud/iteration_<M>/articulation.json` (the highest N and M present) and the scene's `gt/trans.json`,
and prints a markdown table of the metrics of `evaluation/metrics.py` (axis angle, axis position, part motion, joint types
right). Stage 5 reports the same joint numbers in `eval/metrics.json`; this tool needs no renders or meshes, so it
also works on runs cut short before stage 5, and it shows what stage 4 adds to stage 3.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.metrics import evaluate_joints, load_gt_joints  # noqa: E402
from scene.articulation import joint_start_to_end  # noqa: E402
from utils.io_utils import read_json  # noqa: E402


def latest(folder: Path, name: str) -> Path | None:
    """`folder/iteration_<N>/<name>` with the highest N, if any."""
    found = sorted(folder.glob(f"iteration_*/{name}"), key=lambda p: int(p.parent.name.split("_")[1]))
    return found[-1] if found else None


def stage_joints(path: Path) -> list[dict]:
    """Start -> end joints from a stage-3 `joint_voxel_info.json` or a stage-4 `articulation.json`."""
    data = read_json(path, "joint file")
    canonical = data["canonical_state"] if "canonical_state" in data else data["larger_motion_state"]
    joints = data["joints"] if "joints" in data else [part["joint"] for part in data["parts"]]
    return [joint_start_to_end(joint, canonical) for joint in joints]


HEADER = ["| Scene | Stage | Types right | Axis Ang (deg) | Axis Pos | Motion rev (deg) | Motion pris (m) |",
          "|---|---|---:|---:|---:|---:|---:|"]


def row(scene: str, stage: str, path: Path | None, gt: list[dict]) -> str:
    """The table row of the joints in a stage's file (`stage_joints`), or 'missing'."""
    if path is None:
        return f"| {scene} | {stage} | missing | | | | |"
    return table_row(scene, stage, stage_joints(path), gt)


def table_row(scene: str, stage: str, joints: list[dict], gt: list[dict]) -> str:
    """Markdown row of the mean errors of start -> end `joints` against `gt` (evaluation.metrics.evaluate_joints)."""
    result = evaluate_joints(joints, gt)
    mean = result["mean"]

    def cell(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    types = f"{sum(result['type_correct'])}/{len(result['type_correct'])}"
    return (f"| {scene} | {stage} | {types} | {cell(mean['axis_ang'], 3)} | {cell(mean['axis_pos'], 4)} | "
            f"{cell(mean['motion_revolute_deg'], 3)} | {cell(mean['motion_prismatic_m'], 4)} |")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Where a run's outputs and its data are (the benchmark tools that read fetched runs share these)."""
    parser.add_argument("--output_root", default="outputs")
    parser.add_argument("--data_root", default="data")
    parser.add_argument("--dataset", default="gear")
    parser.add_argument("--subset", default="suite")


def run_scenes(args: argparse.Namespace) -> tuple[Path, list[str]]:
    """The run's folder `<output_root>/<dataset>/<subset>` and its scenes (those with a coarse_gs folder), sorted."""
    folder = Path(args.output_root) / args.dataset / args.subset
    return folder, sorted(p.name for p in folder.iterdir() if (p / "coarse_gs").is_dir()) if folder.is_dir() else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    folder, scenes = run_scenes(args)
    if not scenes:
        print(f"error: no scene with a coarse_gs folder under {folder}", file=sys.stderr)
        return 2
    lines = list(HEADER)
    for scene in scenes:
        gt = load_gt_joints(Path(args.data_root) / args.dataset / args.subset / scene / "gt" / "trans.json")
        lines.append(row(scene, "3 voxelize", latest(folder / scene / "coarse_gs" / "point_cloud",
                                                     "joint_voxel_info.json"), gt))
        lines.append(row(scene, "4 train", latest(folder / scene / "gear" / "point_cloud", "articulation.json"), gt))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
