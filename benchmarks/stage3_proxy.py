"""Stage 3 alone on perfect coarse models: part discovery on the protocol's objects, on the CPU, with a result file.

    python benchmarks/stage3_proxy.py generate --set dev          # the set's objects (data_tools, needs Open3D)
    python benchmarks/stage3_proxy.py run --set dev [--protocol auto|given-types] [--objects storage_seed0 ...]
    python benchmarks/stage3_proxy.py run --set dev --coarse_root outputs     # on stage 2's real coarse models
    python benchmarks/stage3_proxy.py run --set dev --jobs 2                  # two objects at a time

A coarse model that renders its training views perfectly has the ground-truth depth as its rendered surface, so each
state's input here is the back-projected depth of its training views, voxel-downsampled at 5 mm as stage 2's
`surface_points_<state>.ply` is, with the training cameras and silhouettes stage 3 reads. The canonical state is
chosen as stage 2 chooses it (`utils.motion_state.larger_motion_state`). Stage 3 (`parts.discover`, default settings)
runs in auto mode (part count and types from the evidence) or, with `--protocol given-types`, with the types of the
table file (`benchmarks/joint_types_given.json`, the papers' per-scene tables protocol; reported apart). What this
leaves out is the coarse models' own error, so it isolates stage 3. Ground truth (`gt/`, the part-id images) is read
for the metrics only, after stage 3 has run.

With `--coarse_root DIR` the input is instead stage 2's real output for the object, as `run_suite.py` writes it
(`DIR/gear/bench_<set>/<scene>/coarse_gs/point_cloud/iteration_<--coarse_iter>/`: `surface_points_<state>.ply` and
`larger_motion_state.txt`, read as stage 3 reads them), with the views of the suite's scene
(`<data_root>/gear/bench_<set>/<scene>`): stage 3 on the coarse models' own error, on the CPU, once stage 2 has run on
a GPU. Its result files are named `..._stage3coarse_...`.

Objects come from `benchmarks/protocol.json` at a reduced size (`--res`, default 300 px; 48 training views). The
result file `benchmarks/results/stage3_proxy/<date>_stage3proxy_<set>_<protocol>_<commit>.json` holds the command,
commit, machine, settings and per object: found part count and types, seconds, joint errors (evaluation.metrics) and part purity
(share of each found part's samples on its matched ground-truth part).
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluation.metrics import evaluate_joints, load_gt_joints  # noqa: E402
from parts.discover import PartsConfig, discover_parts  # noqa: E402
from parts.observation import View  # noqa: E402
from voxelize import camera_view, read_larger_motion_state, state_points  # noqa: E402
from scene.articulation import joint_start_to_end, matrix_to_joint  # noqa: E402
from scene.camera_points import backproject_depth  # noqa: E402
from scene.dataset_readers import load_cameras  # noqa: E402
from utils.motion_state import larger_motion_state  # noqa: E402
from utils.point_cloud import voxel_downsample  # noqa: E402

SUBSET = "stage3_proxy"
SUITE_SUBSET, COARSE_NAME = "bench", "coarse_gs"  # run_suite.py's scene folders and stage 2's model folder
SURFACE_SPACING = 0.005  # stage 2's surface_points spacing


def objects(protocol_file: Path, set_name: str) -> list[dict]:
    """The set's objects, each with its scene name `<category>_seed<seed>`."""
    spec = json.loads(protocol_file.read_text())
    if set_name not in spec:
        raise SystemExit(f"{protocol_file} has no set {set_name!r} (sets: {[k for k in spec if k != 'about']})")
    return [{**obj, "scene": f"{obj['category']}_seed{obj['seed']}"} for obj in spec[set_name]]


def state_input(scene: Path, state: int) -> tuple[np.ndarray, list[View]]:
    """A perfect coarse model's surface of one state and its training views."""
    cameras = load_cameras(scene, state, "train")
    points, colours = backproject_depth(cameras)
    views = [camera_view(camera) for camera in cameras]
    return voxel_downsample(points, colours, SURFACE_SPACING)[0].astype(np.float64), views


def part_ids(scene: Path, state: int, points: np.ndarray) -> np.ndarray:
    """(N,) ground-truth part id (the generator's part images) of the nearest back-projected pixel to each point."""
    from imageio.v3 import imread
    from scipy.spatial import cKDTree

    cloud, ids = [], []
    for cam in load_cameras(scene, state, "train")[::2]:
        image = imread(scene / ("start", "end")[state] / "train" / "part" / f"{cam.image_name}.png")
        depth, alpha = cam.depth[0].numpy(), cam.alpha[0].numpy()
        v, u = np.nonzero((alpha > 0.5) & (depth > 0.1))
        z = depth[v, u]
        local = np.stack([(u + 0.5 - cam.cx) / cam.fx * z, (v + 0.5 - cam.cy) / cam.fy * z, z], axis=1)
        c2w = cam.cam_to_world.numpy()
        cloud.append(local @ c2w[:3, :3].T + c2w[:3, 3])
        ids.append(image[v, u] if image.ndim == 2 else image[v, u, 0])
    return np.concatenate(ids)[cKDTree(np.concatenate(cloud)).query(points)[1]]


def coarse_input(folder: Path, scene: Path, state: int) -> tuple[np.ndarray, list[View]]:
    """Stage 2's rendered surface of one state (its iteration folder `folder`) and the scene's training views."""
    views = [camera_view(camera) for camera in load_cameras(scene, state, "train", load_depth=False)]
    return state_points(folder, state, opacity_threshold=0.5), views


def run_object(scene: Path, types: tuple[str, ...] | None, coarse: Path | None = None) -> dict:
    """Stage 3 on one object (on stage 2's iteration folder `coarse` when given), then its metrics."""
    if coarse is None:
        inputs = [state_input(scene, s) for s in (0, 1)]
        canonical = larger_motion_state(inputs[0][0], inputs[1][0])
    else:
        inputs = [coarse_input(coarse, scene, s) for s in (0, 1)]
        canonical = read_larger_motion_state(coarse)
    begin = time.perf_counter()
    try:
        result = discover_parts(*inputs[canonical], *inputs[1 - canonical], PartsConfig(joint_types=types))
    except ValueError as err:
        return {"status": "error", "error": str(err), "seconds": round(time.perf_counter() - begin, 1)}
    seconds = time.perf_counter() - begin
    gt = load_gt_joints(scene / "gt" / "trans.json")
    joints = [joint_start_to_end(matrix_to_joint(p.transform, p.joint_type), canonical) for p in result.parts]
    errors = evaluate_joints(joints, gt) if joints else {"parts": []}
    purity = []
    if result.parts:  # one back-projection of the part images for all parts
        all_ids = part_ids(scene, canonical, np.concatenate([p.points for p in result.parts]))
    offsets = np.cumsum([0, *(len(p.points) for p in result.parts)])
    for part, lo, hi in zip(result.parts, offsets[:-1], offsets[1:]):
        ids, counts = np.unique(all_ids[lo:hi], return_counts=True)
        purity.append({"gt_id": int(ids[np.argmax(counts)]), "share": round(float(counts.max() / counts.sum()), 3),
                       "samples": int(len(part.points))})
    return {"status": "ok", "canonical": int(canonical), "seconds": round(seconds, 1),
            "found": len(result.parts), "gt_parts": len(gt), "types": [p.joint_type for p in result.parts],
            "gt_types": [j["type"] for j in gt], "joint_errors": errors["parts"], "purity": purity,
            "skipped": len(result.skipped), "stage_seconds": result.stats.get("seconds")}


def run_task(task: tuple[Path, tuple[str, ...] | None, Path | None]) -> dict:
    """`run_object` on one (scene, types, coarse) task: what `--jobs` hands each process."""
    return run_object(*task)


def summarise(rows: list[dict]) -> dict:
    """Counts and mean errors over the objects."""
    ok = [r for r in rows if r["status"] == "ok"]
    matched = [e for r in ok for e in r["joint_errors"] if e.get("pred_index") is not None]

    def mean(key: str, unit: str | None = None) -> float | None:
        values = [e[key] for e in matched if e.get(key) is not None and (unit is None or e["motion_unit"] == unit)]
        return round(float(np.mean(values)), 4) if values else None

    return {"objects": len(rows), "ran": len(ok), "part_count_right": sum(r["found"] == r["gt_parts"] for r in ok),
            "types_right": sum(sorted(r["types"]) == sorted(r["gt_types"]) for r in ok),
            "gt_parts": sum(r["gt_parts"] for r in ok), "matched_parts": len(matched),
            "type_correct": sum(bool(e.get("type_correct")) for e in matched),
            "axis_ang_deg": mean("axis_ang"), "axis_pos": mean("axis_pos"), "motion_deg": mean("motion", "deg"),
            "motion_m": mean("motion", "m"), "median_seconds": float(np.median([r["seconds"] for r in ok])) if ok
            else None}


def git_commit() -> tuple[str, bool]:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "parts", "voxelize.py", "benchmarks"],
                                cwd=ROOT, capture_output=True, text=True).stdout.strip())
    return commit, dirty


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("generate", "run"))
    parser.add_argument("--set", default="dev", help="object set of the protocol file")
    parser.add_argument("--protocol", choices=("auto", "given-types"), default="auto")
    parser.add_argument("--protocol_file", default=str(ROOT / "benchmarks" / "protocol.json"))
    parser.add_argument("--types_table", default=str(ROOT / "benchmarks" / "joint_types_given.json"))
    parser.add_argument("--objects", nargs="*", help="only these scenes (<category>_seed<seed>)")
    parser.add_argument("--data_root", default="data")
    parser.add_argument("--res", type=int, default=300)
    parser.add_argument("--results_dir", default=str(ROOT / "benchmarks" / "results" / "stage3_proxy"))
    parser.add_argument("--coarse_root", help="run_suite's --output_root: stage 3 on stage 2's real coarse models")
    parser.add_argument("--coarse_iter", type=int, default=6000, help="stage 2's iteration (with --coarse_root)")
    parser.add_argument("--jobs", type=int, default=1, help="objects run at a time, one process each")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    chosen = [o for o in objects(Path(args.protocol_file), args.set) if not args.objects or o["scene"] in args.objects]
    subset = f"{SUITE_SUBSET if args.coarse_root else SUBSET}_{args.set}"
    folder = Path(args.data_root) / "gear" / subset
    if args.action == "generate":
        for obj in chosen:
            if not (folder / obj["scene"] / "transforms_train_end.json").is_file():
                subprocess.run([sys.executable, "-m", "data_tools.synthetic", "--category", obj["category"], "--seed",
                                str(obj["seed"]), "--out", str(folder / obj["scene"]), "--res", str(args.res),
                                "--views", "48", "--test_views", "1", "--open_state", obj["open"],
                                "--supersample", "1"], check=True)
        return 0
    table = json.loads(Path(args.types_table).read_text()).get("gear", {}) if args.protocol == "given-types" else {}
    tasks = []
    for obj in chosen:
        scene = folder / obj["scene"]
        if not scene.is_dir():
            maker = "run_suite.py" if args.coarse_root else "stage3_proxy.py"
            raise SystemExit(f"{scene} is missing: run `python benchmarks/{maker} generate --set {args.set}`")
        types = None
        if args.protocol == "given-types":
            if obj["scene"] not in table:
                raise SystemExit(f"{args.types_table} lists no types for {obj['scene']}")
            types = tuple(table[obj["scene"]])
        coarse = None
        if args.coarse_root:
            coarse = (Path(args.coarse_root) / "gear" / subset / obj["scene"] / COARSE_NAME / "point_cloud"
                      / f"iteration_{args.coarse_iter}")
            if not coarse.is_dir():
                raise SystemExit(f"{coarse} is missing: run stages 1-2 of `benchmarks/run_suite.py` with "
                                 f"--output_root {args.coarse_root}")
        tasks.append((scene, types, coarse))
    rows = []
    with ProcessPoolExecutor(args.jobs) if args.jobs > 1 else nullcontext() as pool:
        for obj, found in zip(chosen, (pool.map if pool else map)(run_task, tasks)):  # in the protocol's order
            row = {**obj, **found}
            rows.append(row)
            print(json.dumps({k: row.get(k) for k in ("scene", "status", "found", "gt_parts", "types", "seconds")}),
                  flush=True)
    commit, dirty = git_commit()
    result = {"benchmark": "stage3_proxy", "date": date.today().isoformat(), "commit": commit, "dirty": dirty,
              "machine": {"host": platform.node(), "cpus": __import__("os").cpu_count(), "gpu": None},
              "command": " ".join(["python", "benchmarks/stage3_proxy.py", *(argv or sys.argv[1:])]),
              "set": args.set, "protocol": args.protocol, "res": args.res,
              "input": {"coarse_root": args.coarse_root, "coarse_iter": args.coarse_iter} if args.coarse_root
              else "back-projected depth", "summary": summarise(rows), "objects": rows}
    kind = "stage3coarse" if args.coarse_root else "stage3proxy"
    out = Path(args.results_dir) / f"{result['date']}_{kind}_{args.set}_{args.protocol}_{commit[:7]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"]), "->", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
