"""Benchmark suite: the objects of `benchmarks/protocol.json` through stages 1-5, one committed result file per run.

    python benchmarks/run_suite.py generate --set dev                      # here (needs Open3D): data/gear/bench_dev
    python benchmarks/run_suite.py run --set dev --schedule short --jobs 6 --gpus 2              # on the GPU machine
    python benchmarks/run_suite.py run --set held_out --protocol given-types --schedule short    # the labelled variant
    python benchmarks/make_table.py --readme README.md                     # README's table from the result files

Objects. `benchmarks/protocol.json` lists two sets, `dev` and `held_out`, each object by generator category, seed,
open state and options (its `generator` entry: resolution and views). `generate --set S` renders set S with
`data_tools.synthetic.generate_scene` into `<data_root>/gear/bench_<S>/<category>_seed<seed>` (skipping scenes already
there); `run --set S` runs stages 1-5 on them. Stage 3's parameters were chosen on dev objects only; held-out objects
are run once and reported as they come (see benchmarks/README.md).

Protocols. `--protocol auto` (the default) runs the method as a user would: stage 3 gets no part count and no joint
types and finds both. `--protocol given-types` is the variant of the papers' per-scene tables: stage 3 gets each
object's part count and joint types (`--num_parts K --joint_types s,r,p`, static part first) from a table file a user
writes by hand, `--types_table` (default `benchmarks/joint_types_given.json`, written by
`benchmarks/write_types_table.py`; format `{"gear": {"<scene name>": ["revolute", "prismatic", ...]}}`, movable parts
in any order). Its results are a different protocol and are reported apart. Nothing in either protocol reads the
generated scenes' ground truth to build a stage's input; only stage 5's metrics do.

Schedules. `--schedule default` runs the stages' default schedules (30k + 30k iterations); `short` scales them to
6000 + 5000 iterations (what one 30-minute device session holds for a few objects); `quick` to 2000 + 2000 for
development. The shortened schedules do not reset opacity, which a short run cannot recover from. Each object's
stages run in one subprocess chain (logs next to its outputs); objects run `--jobs` at a time, spread round-robin over
`--gpus` GPUs. `--stages` runs only some stages (the others' outputs must exist); `--extra STAGE=ARGS` passes options
to one stage (e.g. `--extra 'train=--init_reach 0'`); `--objects` runs only the named objects of the set (the result
file says which). Stage 1 uses the classical segmenter unless `--segmenter sam`.

Results. Every `run` writes `benchmarks/results/<date>_<set>_<protocol>_<schedule>_<commit>.json` and a markdown
rendering next to it (`benchmarks/suite_results.py` has the schema): date, commit and whether the tree was dirty,
machine, command line, protocol, schedule with its exact stage arguments, and per object its generator options,
per-stage wall seconds and return codes, the part count and joint types stage 3 found, and stage 5's metric summary.
A failed object is recorded with its stage, return code and last log lines. Commit these files; `make_table.py`
builds README's table from them.
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
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import suite_results  # noqa: E402

DATASET = "gear"
PROTOCOL_FILE = ROOT / "benchmarks" / "protocol.json"
TYPES_TABLE = ROOT / "benchmarks" / "joint_types_given.json"
RESULTS_DIR = ROOT / "benchmarks" / "results"
SETS = ("dev", "dev_extra", "held_out")
PROTOCOLS = ("auto", "given-types")
STAGES = suite_results.SUITE_STAGES
# Output names of scene/contract.py (not imported: its package pulls in torch, which the suite's parent process
# does not need): stage 2's model folder, stage 3's summary in its iteration folder, stage 4's model folder.
COARSE_NAME, STAGE3_JSON, MODEL_NAME = "coarse_gs", "joint_voxel_info.json", "gear"
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
GENERATOR_OPTIONS = ("appearance", "orientation", "lighting", "motion", "supersample")  # optional per object
_TYPE_LETTERS = {"revolute": "r", "prismatic": "p"}


class ProtocolError(ValueError):
    """A protocol or joint-type table file that cannot be used; the message names the file."""


@dataclass(frozen=True)
class BenchObject:
    """One object of a protocol set: its scene name, generator category, seed, open state and other options."""

    category: str
    seed: int
    open_state: str
    options: dict = field(default_factory=dict)

    @property
    def scene(self) -> str:
        return f"{self.category}_seed{self.seed}"


def subset_of(set_name: str) -> str:
    """The data/output subset of a protocol set: `bench_dev`, `bench_held_out`."""
    return f"bench_{set_name}"


def load_protocol(path: Path, set_name: str) -> tuple[dict, list[BenchObject]]:
    """The generator settings (`res`, `views`, `test_views`) and the objects of set `set_name` of `path`."""
    try:
        protocol = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ProtocolError(f"protocol file {path}: {err}") from err
    if set_name not in protocol or not isinstance(protocol[set_name], list):
        raise ProtocolError(f"protocol file {path} has no object list {set_name!r}")
    objects = []
    for entry in protocol[set_name]:
        unknown = set(entry) - {"category", "seed", "open", *GENERATOR_OPTIONS}
        if unknown or not {"category", "seed"} <= set(entry):
            raise ProtocolError(f"protocol file {path}, set {set_name}: bad object {entry!r} (keys: category, seed, "
                                f"open and optionally {', '.join(GENERATOR_OPTIONS)})")
        options = {key: entry[key] for key in GENERATOR_OPTIONS if key in entry}
        objects.append(BenchObject(entry["category"], int(entry["seed"]), entry.get("open", "end"), options))
    names = [obj.scene for obj in objects]
    if len(set(names)) != len(names):
        raise ProtocolError(f"protocol file {path}, set {set_name}: repeated objects in {names}")
    return dict(protocol.get("generator", {})), objects


def generator_options(generator: dict, obj: BenchObject) -> dict:
    """Every option the generator renders `obj` with, defaults included (as the result files record them)."""
    from data_tools.lighting import DEFAULT_LIGHTING
    from data_tools.objects import DEFAULT_APPEARANCE, DEFAULT_MOTION, DEFAULT_ORIENTATION

    options = {"open_state": obj.open_state, "res": 256, "views": 48, "test_views": 12, "supersample": 3,
               "appearance": DEFAULT_APPEARANCE, "orientation": DEFAULT_ORIENTATION, "lighting": DEFAULT_LIGHTING,
               "motion": DEFAULT_MOTION}
    options.update({key: generator[key] for key in ("res", "views", "test_views") if key in generator})
    options.update(obj.options)
    return options


def select_objects(objects: list[BenchObject], names: list[str] | None) -> list[BenchObject]:
    """The objects named in `names` (all when None), in protocol order."""
    if not names:
        return objects
    known = {obj.scene for obj in objects}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ProtocolError(f"--objects {unknown}: not in this set; its objects are {sorted(known)}")
    return [obj for obj in objects if obj.scene in names]


def generate(args: argparse.Namespace, generator: dict, objects: list[BenchObject]) -> None:
    """Render the set's scenes (skips those already there)."""
    from data_tools.synthetic import generate_scene

    for obj in objects:
        out = Path(args.data_root) / DATASET / args.subset / obj.scene
        if (out / "transforms_test_end.json").is_file():
            print(f"{out} exists")
            continue
        options = generator_options(generator, obj)
        info = generate_scene(obj.category, out, res=options.pop("res"), views=options.pop("views"),
                              test_views=options.pop("test_views"), seed=obj.seed,
                              open_state=options.pop("open_state"), supersample=options.pop("supersample"),
                              progress=False, **options)
        print(f"{out}: {info.get('seconds', 0):.0f} s")


# ------------------------------------------------------------------------------------------------- stage inputs
def given_types(table: Path, scene: str) -> list[str]:
    """The movable parts' joint types of `scene` in the hand-written table `table` (given-types protocol only).

    The table is `{"gear": {"<scene>": ["revolute" | "prismatic", ...]}}` (other top-level keys, e.g. "about",
    are ignored)."""
    table = Path(table)
    try:
        data = json.loads(table.read_text())
    except FileNotFoundError as err:
        raise ProtocolError(f"joint-type table {table} not found (--protocol given-types needs it; "
                            "benchmarks/write_types_table.py writes it)") from err
    except json.JSONDecodeError as err:
        raise ProtocolError(f"joint-type table {table} is not valid JSON: {err}") from err
    scenes = data.get(DATASET) if isinstance(data, dict) else None
    if not isinstance(scenes, dict):
        raise ProtocolError(f"joint-type table {table} must hold {{\"{DATASET}\": {{\"<scene>\": [types]}}}}")
    types = scenes.get(scene)
    if types is None:
        raise ProtocolError(f"joint-type table {table} lists no joint types for scene {scene!r} "
                            f"(dataset {DATASET!r}); add it or use --protocol auto")
    if not isinstance(types, list) or not types or any(t not in _TYPE_LETTERS for t in types):
        raise ProtocolError(f"joint-type table {table}, scene {scene!r}: expected a non-empty list of "
                            f"{list(_TYPE_LETTERS)}, got {types!r}")
    return list(types)


def stage3_arguments(args: argparse.Namespace, scene: str) -> list[str]:
    """Stage 3's part-count and joint-type arguments: none (auto) or the table's `--num_parts K --joint_types
    s,...` (K counts the static part)."""
    if args.protocol == "auto":
        return []
    types = given_types(Path(args.types_table), scene)
    return ["--num_parts", str(len(types) + 1), "--joint_types", ",".join(["s", *(_TYPE_LETTERS[t] for t in types)])]


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
        "voxelize": [py, "voxelize.py", *common, "--coarse_name", COARSE_NAME, "--coarse_iter", coarse_iter,
                     *stage3_arguments(args, scene)],
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


# ---------------------------------------------------------------------------------------------------- running
def scene_output(args: argparse.Namespace, scene: str) -> Path:
    return Path(args.output_root) / DATASET / args.subset / scene


def stage3_json(args: argparse.Namespace, scene: str) -> Path:
    """Stage 3's `joint_voxel_info.json` of the scene (in stage 2's iteration folder)."""
    return (scene_output(args, scene) / COARSE_NAME / "point_cloud" / f"iteration_{COARSE_ITERS[args.schedule]}"
            / STAGE3_JSON)


def metrics_json(args: argparse.Namespace, scene: str) -> Path:
    """Stage 5's `eval/metrics.json` of the scene."""
    return scene_output(args, scene) / MODEL_NAME / "eval" / "metrics.json"


def run_scene(args: argparse.Namespace, scene: str, gpu: int | None,
              commands: dict[str, list[str]] | None = None) -> dict:
    """Run the scene's stages of `--stages` in order (on GPU `gpu` when given); stop at the first failure. Logs go
    next to its outputs. Returns `{"scene", "status", "stages": {stage: {"seconds", "returncode", "log"}},
    "failure", "commands"}`; a stage not run (not in `--stages`, or after a failure) is absent from "stages"."""
    log_dir = scene_output(args, scene)
    log_dir.mkdir(parents=True, exist_ok=True)
    commands = stage_commands(args, scene) if commands is None else commands
    stages: dict[str, dict] = {}
    failure = None
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    for stage, command in commands.items():
        if stage not in args.stages:
            continue
        log = log_dir / f"{stage}.log"
        begin = time.perf_counter()
        try:
            with open(log, "w") as handle:
                returncode = subprocess.run(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
                                            env=env).returncode
            error = None
        except OSError as err:  # the entry point could not be started at all
            returncode, error = None, f"{type(err).__name__}: {err}"
        stages[stage] = {"seconds": time.perf_counter() - begin, "returncode": returncode, "log": str(log)}
        if returncode != 0:
            failure = {"stage": stage, "returncode": returncode, "log": str(log),
                       "log_tail": suite_results.log_tail(log) + ([error] if error else [])}
            break
    status = "ok" if failure is None else "failed"
    note = "ok" if failure is None else f"{failure['stage']} failed (exit {failure['returncode']}, see {failure['log']})"
    print(f"[suite] {scene}: {note}; " + ", ".join(f"{s} {v['seconds']:.0f} s" for s, v in stages.items()),
          flush=True)
    return {"scene": scene, "status": status, "stages": stages, "failure": failure, "commands": commands}


def run(args: argparse.Namespace, objects: list[BenchObject]) -> list[dict]:
    """All objects, `--jobs` at a time, spread round-robin over `--gpus` GPUs (0 = leave CUDA_VISIBLE_DEVICES as
    is). Every command line is built (and the given-types table read) before anything runs."""
    commands = [stage_commands(args, obj.scene) for obj in objects]
    gpus = [i % args.gpus if args.gpus else None for i in range(len(objects))]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        return list(pool.map(lambda item: run_scene(args, item[0].scene, item[1], item[2]),
                             zip(objects, gpus, commands)))


def object_record(args: argparse.Namespace, obj: BenchObject, generator: dict, outcome: dict) -> dict:
    """One object's entry of the result file: what ran, and what stages 3 and 5 wrote in this run."""
    ran = outcome["stages"]
    ok = {stage for stage, entry in ran.items() if entry["returncode"] == 0}
    return suite_results.object_record(
        scene=obj.scene, category=obj.category, seed=obj.seed, generator=generator_options(generator, obj),
        outcome=outcome,
        stage3_path=stage3_json(args, obj.scene) if "voxelize" in ok else None,
        metrics_path=metrics_json(args, obj.scene) if "render" in ok else None)


def schedule_record(args: argparse.Namespace) -> dict:
    """The schedule's name and the exact arguments it gives each stage (plus `--extra`)."""
    stage_args = {"coarse": SCHEDULES[args.schedule]["coarse"],
                  "voxelize": ["--coarse_iter", str(COARSE_ITERS[args.schedule])],
                  "train": ["--coarse_iter", str(COARSE_ITERS[args.schedule]), *SCHEDULES[args.schedule]["train"]]}
    return {"name": args.schedule, "stage_args": stage_args, "extra": stage_extras(args.extra or [])}


def protocol_record(args: argparse.Namespace) -> dict:
    record = {"name": args.protocol}
    if args.protocol == "given-types":
        record["types_table"] = suite_results.relative(Path(args.types_table), ROOT)
    return record


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("generate", "run"))
    parser.add_argument("--set", dest="set_name", choices=SETS, required=True,
                        help="the object set of --protocol_file")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="auto",
                        help="auto: stage 3 finds the part count and types (default); given-types: they come from "
                             "--types_table, the papers' per-scene-table variant, reported apart")
    parser.add_argument("--types_table", default=str(TYPES_TABLE),
                        help="joint-type table of --protocol given-types: {\"gear\": {\"<scene>\": [types]}}")
    parser.add_argument("--protocol_file", default=str(PROTOCOL_FILE))
    parser.add_argument("--objects", nargs="+", metavar="SCENE",
                        help="only these objects of the set (<category>_seed<seed>)")
    parser.add_argument("--data_root", default="data")
    parser.add_argument("--output_root", default="outputs")
    parser.add_argument("--results_dir", default=str(RESULTS_DIR), help="where `run` writes its result files")
    parser.add_argument("--schedule", choices=tuple(SCHEDULES), default="default")
    parser.add_argument("--segmenter", choices=("classic", "sam"), default="classic")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                        help="run only these stages; the others' outputs must exist")
    parser.add_argument("--extra", action="append", metavar="STAGE=ARGS",
                        help="extra arguments for one stage's entry point, e.g. 'train=--no-one_render_call' "
                             "(repeatable)")
    parser.add_argument("--jobs", type=int, default=6, help="objects processed at the same time")
    parser.add_argument("--gpus", type=int, default=0, help="spread the objects over this many GPUs")
    for name in ("res", "views", "test_views"):
        parser.add_argument(f"--{name}", type=int, default=None,
                            help=f"render the objects with this {name} instead of the protocol file's (give it to "
                                 "generate and run alike; the result file records it)")
    args = parser.parse_args(argv)
    args.subset = subset_of(args.set_name)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    try:
        generator, objects = load_protocol(Path(args.protocol_file), args.set_name)
        generator.update({name: getattr(args, name) for name in ("res", "views", "test_views")
                          if getattr(args, name) is not None})
        selected = select_objects(objects, args.objects)
        if args.action == "generate":
            generate(args, generator, selected)
            return 0
        for obj in selected:  # fail before anything runs when the given-types table lacks an object
            stage3_arguments(args, obj.scene)
    except ProtocolError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    started = suite_results.now()
    repo = suite_results.repo_state(ROOT)
    machine = suite_results.machine_info()
    outcomes = run(args, selected)
    result = suite_results.build_result(
        started=started, finished=suite_results.now(), repo=repo, machine=machine,
        command=shlex.join(["python", "benchmarks/run_suite.py", *argv]),
        set_name=args.set_name, protocol_file=suite_results.relative(Path(args.protocol_file), ROOT),
        set_size=len(objects), protocol=protocol_record(args), schedule=schedule_record(args),
        run={"stages": list(args.stages), "jobs": args.jobs, "gpus": args.gpus, "segmenter": args.segmenter,
             "data_root": args.data_root, "output_root": args.output_root, "subset": args.subset},
        objects=[object_record(args, obj, generator, outcome) for obj, outcome in zip(selected, outcomes)])
    json_path, md_path = suite_results.write_result(result, Path(args.results_dir))
    print(md_path.read_text())
    print(f"[suite] results: {json_path} and {md_path}")
    return 0 if all(entry["status"] == "ok" for entry in result["objects"]) else 1


if __name__ == "__main__":
    sys.exit(main())
