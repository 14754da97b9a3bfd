"""Accuracy and speed suite: every synthetic category through stages 1-5, one table.

    python benchmarks/run_suite.py generate               # here (needs Open3D): data/gear/suite/<category>
    python benchmarks/run_suite.py run --jobs 6           # on the GPU machine: stages 1-5, objects in parallel
    python benchmarks/run_suite.py table                  # the table again from the outputs

The suite is fixed: one object per category, seed 0, 400 px, 48 training + 8 test views per state (the size of the
reference measurement in DESIGN.md §7); the fridge and the laptop are open in the start state so that both
canonical-state cases are exercised. Each object's joint types are given to stage 3 (as the papers' per-scene tables
give them), so the part count and types are inputs, not guesses. Stage 1 uses the classical segmenter unless `--segmenter sam` (the GPU machine
has no SAM weights). `--schedule default` runs the stages' default schedules (30k + 30k iterations: more than one
30-minute device session holds for six objects on two GPUs); `--schedule short` scales them to 6000 + 5000 iterations
(what such a session holds); `--schedule quick` to 2000 + 2000 for development. The shortened schedules do not reset
opacity, which a short run cannot recover from. Each object's stages run in one subprocess chain; objects
run `--jobs` at a time (they share the GPU: the renders are small and mostly launch-bound). Per-stage wall times
come from the chain; accuracy from stage 5's `eval/metrics.json`. The table (markdown) goes to stdout and with the
raw rows to `<output_root>/gear/suite/suite_results.md` and `suite_runs.json`; a later run (other scenes, or only
some stages with `--stages`, e.g. `--stages train render` after changing stage 4) updates its rows there. `--seed N`
(N > 0) generates and runs other objects of the same categories (held-out: nothing was tuned on them) under the
subset `suite_seed<N>`. `--extra STAGE=ARGS` passes options to one stage (e.g. `--extra 'train=--init_reach 0'`).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.collect_results import column_means, find_metrics, load_rows, markdown_table  # noqa: E402
from evaluation.metrics import load_gt_joints  # noqa: E402

DATASET, SUBSET = "gear", "suite"
SUITE = {"cabinet": "end", "drawers": "end", "fridge": "start", "storage": "end", "laptop": "start", "oven": "end"}
STAGES = ("masks", "coarse", "voxelize", "train", "render")
SCHEDULES = {
    "default": {"coarse": [], "train": []},
    "short": {  # the default schedules scaled to 6000 + 5000 iterations: what fits one device session
        "coarse": ["--iterations", "6000", "--densify_from_iter", "100", "--densify_until_iter", "3000",
                   "--opacity_reset_interval", "100000", "--normal_from_iter", "1400", "--dist_from_iter", "600",
                   "--opacity_from_iter", "3000", "--save_iterations", "6000"],
        "train": ["--iterations", "5000", "--em_interval", "700", "--densify_from_iter", "500",
                  "--densify_until_iter", "2500", "--prismatic_switch_iter", "1700", "--checkpoint_iterations",
                  "5000"],
    },
    "quick": {
        "coarse": ["--iterations", "2000", "--densify_from_iter", "200", "--densify_until_iter", "1200",
                   "--opacity_reset_interval", "100000", "--normal_from_iter", "800", "--dist_from_iter", "400",
                   "--opacity_from_iter", "1200", "--save_iterations", "2000"],
        "train": ["--iterations", "2000", "--em_interval", "400", "--densify_from_iter", "200",
                  "--densify_until_iter", "1200", "--prismatic_switch_iter", "800", "--checkpoint_iterations", "2000"],
    },
}
COARSE_ITERS = {"default": 30000, "short": 6000, "quick": 2000}


def generate(args: argparse.Namespace) -> None:
    """Render the suite's scenes (skips those already there)."""
    from data_tools.synthetic import generate_scene

    for category, open_state in SUITE.items():
        if category not in args.scenes:
            continue
        out = Path(args.data_root) / DATASET / args.subset / category
        if (out / "transforms_test_end.json").is_file():
            print(f"{out} exists")
            continue
        info = generate_scene(category, out, res=args.res, views=args.views, test_views=args.test_views, seed=args.seed,
                              open_state=open_state, supersample=args.supersample, progress=False)
        print(f"{out}: {info.get('seconds', 0):.0f} s")


def suite_subset(seed: int) -> str:
    """The subset the suite's objects of generator seed `seed` live in: `suite`, or `suite_seed<N>` (held out)."""
    return SUBSET if seed == 0 else f"{SUBSET}_seed{seed}"


def given_joint_types(scene_dir: Path) -> str:
    """The scene's joint types as stage 3's `--joint_types` (e.g. 's,p,p'): an input of the method, as the papers'
    per-scene tables are (read from the generator's `gt/trans.json`; nothing else of the ground truth is given)."""
    return ",".join(["s", *(joint["type"][0] for joint in load_gt_joints(scene_dir / "gt" / "trans.json"))])


def stage_commands(args: argparse.Namespace, scene: str) -> dict[str, list[str]]:
    """The five entry points' command lines for one scene."""
    py = sys.executable
    common = ["--source_path", args.data_root, "--output_root", args.output_root, "--dataset", DATASET,
              "--subset", args.subset, "--scene_name", scene]
    schedule = SCHEDULES[args.schedule]
    coarse_iter = str(COARSE_ITERS[args.schedule])
    commands = {
        "masks": [py, "utils/get_mask.py", "--dataset_path", f"{DATASET}/{args.subset}/{scene}", "--data_root",
                  args.data_root, "--output_root", args.output_root, "--segmenter", args.segmenter],
        "coarse": [py, "coarse.py", *common, "--random_bg_color", *schedule["coarse"]],
        "voxelize": [py, "voxelize.py", "--dataset", DATASET, "--subset", args.subset, "--scenes", scene,
                     "--output_root", args.output_root, "--iteration", coarse_iter,
                     "--joint_types", given_joint_types(Path(args.data_root) / DATASET / args.subset / scene)],
        "train": [py, "train.py", *common, "--coarse_iter", coarse_iter, "--random_bg_color", "--quiet",
                  *schedule["train"]],
        "render": [py, "render.py", *common],
    }
    if args.segmenter == "classic" and args.jobs > 1:
        commands["masks"] += ["--workers", str(mask_workers(args.jobs))]
    for stage, extra in stage_extras(getattr(args, "extra", None) or []).items():
        commands[stage] += extra
    return commands


def mask_workers(jobs: int) -> int:
    """Stage 1's classic-segmenter processes per object when `jobs` objects run at once: a share of the cores, so
    that one object's stage 1 does not starve the others' training loops of host time."""
    return max(1, len(os.sched_getaffinity(0)) // jobs)


def stage_extras(items: list[str]) -> dict[str, list[str]]:
    """`--extra` items `STAGE=ARGS` (e.g. `train=--no-one_render_call --init_reach 0`) as extra arguments per stage."""
    extras: dict[str, list[str]] = {}
    for item in items:
        stage, sep, text = item.partition("=")
        if not sep or stage not in STAGES:
            raise SystemExit(f"--extra {item!r}: expected STAGE=ARGS with STAGE one of {', '.join(STAGES)}")
        extras.setdefault(stage, []).extend(shlex.split(text))
    return extras


def run_scene(args: argparse.Namespace, scene: str, gpu: int | None) -> dict:
    """Run the scene's stages of `--stages` in order (on GPU `gpu` when given); stop at the first failure. Logs go
    next to its outputs."""
    log_dir = Path(args.output_root) / DATASET / args.subset / scene
    log_dir.mkdir(parents=True, exist_ok=True)
    times: dict[str, float | None] = {stage: None for stage in STAGES}
    status = "ok"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    for stage, command in stage_commands(args, scene).items():
        if stage not in args.stages:
            continue
        begin = time.perf_counter()
        with open(log_dir / f"{stage}.log", "w") as handle:
            result = subprocess.run(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, env=env)
        times[stage] = time.perf_counter() - begin
        if result.returncode != 0:
            status = f"{stage} failed (exit {result.returncode}, see {log_dir / (stage + '.log')})"
            break
    print(f"[suite] {scene}: {status}; " + ", ".join(f"{s} {t:.0f} s" for s, t in times.items() if t is not None),
          flush=True)
    return {"scene": scene, "status": status, "seconds": times}


def run(args: argparse.Namespace) -> list[dict]:
    """All scenes, `--jobs` at a time, spread round-robin over `--gpus` GPUs (0 = leave CUDA_VISIBLE_DEVICES as is)."""
    gpus = [i % args.gpus if args.gpus else None for i in range(len(args.scenes))]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        return list(pool.map(lambda item: run_scene(args, *item), zip(args.scenes, gpus)))


def merge_runs(previous: list[dict], runs: list[dict]) -> list[dict]:
    """Suite rows by scene (suite order): this run's rows replace earlier ones but keep their stage times for the
    stages this run skipped (`--stages`), so a suite run over several calls still reports every stage; other scenes'
    rows are kept."""
    rows = {entry["scene"]: entry for entry in previous}
    for entry in runs:
        kept = rows.get(entry["scene"], {}).get("seconds", {})
        seconds = {stage: kept.get(stage) if entry["seconds"][stage] is None else entry["seconds"][stage]
                   for stage in STAGES}
        rows[entry["scene"]] = {**entry, "seconds": seconds}
    order = {scene: i for i, scene in enumerate(SUITE)}
    return sorted(rows.values(), key=lambda entry: order.get(entry["scene"], len(order)))


def table(args: argparse.Namespace, runs: list[dict] | None) -> str:
    """Markdown table: collect_results' accuracy columns plus wall time per stage."""
    folder = Path(args.output_root) / DATASET / args.subset
    folder.mkdir(parents=True, exist_ok=True)
    runs_path = folder / "suite_runs.json"
    previous = json.loads(runs_path.read_text()) if runs_path.is_file() else []
    if runs is None:
        runs = previous
    else:
        runs = merge_runs(previous, runs)
        runs_path.write_text(json.dumps(runs, indent=2))
    rows = load_rows(find_metrics(folder, "gear"), folder)
    text = markdown_table(rows, column_means(rows))
    if runs:
        lines = ["", "| object | status | " + " | ".join(f"{s} (s)" for s in STAGES) + " | stages 2-5 (s) |",
                 "|---|---|" + "---|" * (len(STAGES) + 1)]
        for entry in runs:
            secs = entry["seconds"]
            total = sum(secs[s] or 0.0 for s in STAGES[1:])
            cells = " | ".join("-" if secs[s] is None else f"{secs[s]:.0f}" for s in STAGES)
            lines.append(f"| {entry['scene']} | {entry['status']} | {cells} | {total:.0f} |")
        text += "\n".join(lines) + "\n"
    (folder / "suite_results.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("generate", "run", "table"))
    parser.add_argument("--data_root", default="data")
    parser.add_argument("--output_root", default="outputs")
    parser.add_argument("--scenes", nargs="+", default=list(SUITE), choices=list(SUITE))
    parser.add_argument("--res", type=int, default=400)
    parser.add_argument("--views", type=int, default=48)
    parser.add_argument("--test_views", type=int, default=8)
    parser.add_argument("--supersample", type=int, default=3)
    parser.add_argument("--schedule", choices=tuple(SCHEDULES), default="default")
    parser.add_argument("--seed", type=int, default=0,
                        help="the generator's seed; other than 0: held-out objects in data/gear/suite_seed<N>")
    parser.add_argument("--segmenter", choices=("classic", "sam"), default="classic")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                        help="run only these stages; the others' outputs must exist (the table keeps their times "
                             "from an earlier run)")
    parser.add_argument("--extra", action="append", metavar="STAGE=ARGS",
                        help="extra arguments for one stage's entry point, e.g. 'train=--no-one_render_call' "
                             "(repeatable)")
    parser.add_argument("--jobs", type=int, default=6, help="objects processed at the same time")
    parser.add_argument("--gpus", type=int, default=0, help="spread the objects over this many GPUs")
    args = parser.parse_args(argv)
    args.subset = suite_subset(args.seed)
    if args.action == "generate":
        generate(args)
        return 0
    runs = run(args) if args.action == "run" else None
    print(table(args, runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
