"""The suite's result files: what `run_suite.py run` measured, written as JSON plus a markdown rendering.

`benchmarks/results/<date>_<set>_<protocol>_<schedule>_<commit>.json` (a `_2`, `_3`, ... suffix when that name is
taken) holds one run:

    schema          1
    date            UTC start of the run (ISO 8601); `finished` its end
    commit          `git rev-parse HEAD` at the start; `dirty`: tracked files differed from it
    machine         hostname, cpu_count (os.cpu_count), cpu_affinity (cores the run could use), gpu
                    (torch.cuda.get_device_name(0), null without CUDA), gpu_count, gpu_error (why there is no name)
    command         the command line
    set             "dev" | "held_out"; protocol_file, set_size (objects in the set), objects run (len(objects))
    protocol        {"name": "auto"} or {"name": "given-types", "types_table": <path>}
    schedule        {"name", "stage_args": {stage: [arguments the schedule adds]}, "extra": {stage: [--extra]}}
    run             stages, jobs, gpus, segmenter, data_root, output_root, subset
    objects         per object:
        scene, category, seed, generator    (every option the generator rendered it with)
        status          "ok" | "failed"
        stages          {stage: {"seconds", "returncode"}} for the stages that ran (stops at a failure)
        seconds_total   sum of those
        failure         null or {"stage", "returncode", "log", "log_tail": [last lines]}
        stage3          null (stage 3 did not run) or from its joint_voxel_info.json: {"num_parts" (K, static
                        included), "joint_types" (movable parts), "joint_types_source"} or {"error"}
        metrics         null (stage 5 did not run) or stage 5's `eval/metrics.json` "summary"
                        (evaluation.metrics.summarise), or {"error"}
        part_count      null or {"gt", "pred"}: movable parts of the ground truth and of the evaluated joints
                        (from metrics.json's joint matching)
        commands        {stage: argv}

`aggregate` gives one run's headline numbers (make_table.py's row): errors are means over the objects that finished
and have the number; the joint-type and part-count accuracies count an object that failed as wrong (when the run
included stage 5); seconds per object is the median over the objects that finished.
"""
from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

SCHEMA = 1
LOG_TAIL_LINES = 30
# (header, aggregate key, decimals): make_table.py's and the markdown's summary columns
SUMMARY_COLUMNS = (
    ("Axis Ang (deg)", "axis_ang", 3),
    ("Axis Pos", "axis_pos", 4),
    ("Motion rev (deg)", "motion_revolute_deg", 3),
    ("Motion pris", "motion_prismatic_m", 4),
    ("Type Acc", "type_accuracy", 2),
    ("Count Acc", "count_accuracy", 2),
    ("CD-m", "cd_movable", 3),
    ("CD-w", "cd_whole", 3),
    ("s/object", "median_seconds", 0),
)
SUITE_STAGES = ("masks", "coarse", "voxelize", "train", "render")
ERROR_KEYS = ("axis_ang", "axis_pos", "motion_revolute_deg", "motion_prismatic_m", "cd_movable", "cd_whole")


# ------------------------------------------------------------------------------------------------- provenance
def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def relative(path: Path, root: Path) -> str:
    """`path` relative to `root` when inside it, else as given."""
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)


def repo_state(root: Path) -> dict:
    """The checkout's commit and whether tracked files differ from it (untracked files, e.g. results, don't count)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    if os.environ.get("GEAR_COMMIT"):  # a copy of the tree without its git history (e.g. on a lent GPU machine)
        return {"commit": os.environ["GEAR_COMMIT"], "dirty": None, "commit_source": "GEAR_COMMIT"}
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


_GPU_QUERY = ("import json, torch\n"
              "ok = torch.cuda.is_available()\n"
              "print(json.dumps({'gpu': torch.cuda.get_device_name(0) if ok else None,"
              " 'gpu_count': torch.cuda.device_count() if ok else 0}))")


def machine_info() -> dict:
    """Hostname, CPU count and GPU name. The GPU is asked in a child process so that this one holds no CUDA
    context while the stages train."""
    info = {"hostname": socket.gethostname(), "cpu_count": os.cpu_count(),
            "cpu_affinity": len(os.sched_getaffinity(0)), "gpu": None, "gpu_count": 0}
    try:
        done = subprocess.run([sys.executable, "-c", _GPU_QUERY], capture_output=True, text=True, timeout=120)
        if done.returncode == 0:
            info.update(json.loads(done.stdout.strip().splitlines()[-1]))
        else:
            info["gpu_error"] = (done.stderr.strip().splitlines() or ["torch failed"])[-1]
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as err:
        info["gpu_error"] = f"{type(err).__name__}: {err}"
    return info


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last `lines` lines of a stage log ([] when it cannot be read)."""
    try:
        return Path(path).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


# ------------------------------------------------------------------------------------------------ stage outputs
def read_stage3(path: Path | None) -> dict | None:
    """Part count (static included) and joint types stage 3 found, from its `joint_voxel_info.json`."""
    if path is None:
        return None
    try:
        info = json.loads(Path(path).read_text())
        parts = info["parts"]
        return {"num_parts": 1 + len(parts), "joint_types": [part["joint_type"] for part in parts],
                "joint_types_source": info.get("joint_types_source")}
    except (OSError, ValueError, KeyError, TypeError) as err:
        return {"error": f"{path}: {type(err).__name__}: {err}"}


def read_metrics(path: Path | None) -> tuple[dict | None, dict | None]:
    """Stage 5's metric summary and the evaluated part counts `{"gt", "pred"}` (None without ground truth)."""
    if path is None:
        return None, None
    try:
        metrics = json.loads(Path(path).read_text())
        summary = metrics["summary"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return {"error": f"{path}: {type(err).__name__}: {err}"}, None
    joints = metrics.get("joints")
    count = None
    if isinstance(joints, dict) and isinstance(joints.get("matched"), list):
        matched = joints["matched"]
        count = {"gt": len(matched),
                 "pred": sum(1 for j in matched if j is not None and j >= 0) + len(joints.get("unmatched_pred", []))}
    return summary, count


def object_record(*, scene: str, category: str, seed: int, generator: dict, outcome: dict,
                  stage3_path: Path | None, metrics_path: Path | None) -> dict:
    """One object's entry: `outcome` is run_suite.run_scene's; `stage3_path` / `metrics_path` are the outputs of
    stages 3 and 5 when those stages ran and succeeded in this run (None otherwise)."""
    stages = {stage: {"seconds": round(entry["seconds"], 2), "returncode": entry["returncode"]}
              for stage, entry in outcome["stages"].items()}
    metrics, count = read_metrics(metrics_path)
    return {
        "scene": scene, "category": category, "seed": seed, "generator": generator,
        "status": outcome["status"], "stages": stages,
        "seconds_total": round(sum(entry["seconds"] for entry in stages.values()), 2),
        "failure": outcome["failure"], "stage3": read_stage3(stage3_path), "metrics": metrics,
        "part_count": count, "commands": outcome["commands"],
    }


# ------------------------------------------------------------------------------------------------- the file
def build_result(*, started: str, finished: str, repo: dict, machine: dict, command: str, set_name: str,
                 protocol_file: str, set_size: int, protocol: dict, schedule: dict, run: dict,
                 objects: list[dict]) -> dict:
    return {"schema": SCHEMA, "date": started, "finished": finished, "commit": repo.get("commit"),
            "dirty": repo.get("dirty"), "machine": machine, "command": command, "set": set_name,
            "protocol_file": protocol_file, "set_size": set_size, "protocol": protocol, "schedule": schedule,
            "run": run, "objects": objects}


def result_stem(result: dict) -> str:
    commit = (result.get("commit") or "nocommit")[:7] + ("-dirty" if result.get("dirty") else "")
    return "_".join([result["date"][:10], result["set"], result["protocol"]["name"], result["schedule"]["name"],
                     commit])


def write_result(result: dict, folder: Path) -> tuple[Path, Path]:
    """Write the result JSON and its markdown rendering into `folder` under a name not yet taken."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = result_stem(result)
    path, n = folder / f"{stem}.json", 1
    while path.exists():
        n += 1
        path = folder / f"{stem}_{n}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    md_path = path.with_suffix(".md")
    md_path.write_text(render_markdown(result, path.name))
    return path, md_path


def load_result(path: Path) -> dict:
    result = json.loads(Path(path).read_text())
    if result.get("schema") != SCHEMA:
        raise ValueError(f"{path}: result schema {result.get('schema')!r}, expected {SCHEMA}")
    return result


# ------------------------------------------------------------------------------------------------- summaries
def _mean(values: list) -> float | None:
    values = [float(v) for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _summary(obj: dict) -> dict:
    metrics = obj.get("metrics")
    return metrics if isinstance(metrics, dict) and "error" not in metrics else {}


def _count_correct(obj: dict) -> float | None:
    count = obj.get("part_count")
    return None if not count else float(count["gt"] == count["pred"])


def aggregate(result: dict) -> dict:
    """One run's headline numbers (see the module docstring for what each mean covers)."""
    objects = result["objects"]
    finished = [obj for obj in objects if obj["status"] == "ok"]
    scored = "render" in result.get("run", {}).get("stages", SUITE_STAGES)
    out = {"objects": len(objects), "ok": len(finished)}
    for key in ERROR_KEYS:
        out[key] = _mean([_summary(obj).get(key) for obj in finished])

    def accuracy(value) -> float | None:
        values = [value(obj) if obj["status"] == "ok" else (0.0 if scored else None) for obj in objects]
        return _mean(values)

    out["type_accuracy"] = accuracy(lambda obj: _summary(obj).get("type_accuracy"))
    out["count_accuracy"] = accuracy(_count_correct)
    seconds = [obj["seconds_total"] for obj in finished]
    out["median_seconds"] = statistics.median(seconds) if seconds else None
    return out


def cell(value: object, decimals: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        return f"{value:.{decimals}f}"
    return str(value)


def set_label(result: dict) -> str:
    """The set, with the share of it that ran and the stages when not all of them."""
    label = result["set"]
    if len(result["objects"]) != result.get("set_size", len(result["objects"])):
        label += f" ({len(result['objects'])}/{result['set_size']})"
    stages = result.get("run", {}).get("stages")
    if stages and set(stages) != set(SUITE_STAGES):
        label += f" [{' '.join(stages)}]"
    return label


def protocol_label(result: dict) -> str:
    return result["protocol"]["name"]


def _types_text(types: list[str]) -> str:
    return ",".join(["s", *(t[0] for t in types)])


def render_markdown(result: dict, name: str = "") -> str:
    """The result file as markdown: provenance, the headline row, one row per object, the failures."""
    machine = result["machine"]
    agg = aggregate(result)
    commit = (result.get("commit") or "?")[:7] + (" (dirty tree)" if result.get("dirty") else "")
    protocol = result["protocol"]
    protocol_text = protocol["name"] + (f" (types from `{protocol['types_table']}`)" if "types_table" in protocol
                                        else " (stage 3 finds the part count and types)")
    schedule = result["schedule"]
    lines = [f"# Suite result {name}".rstrip(), "",
             f"- date: {result['date']} to {result['finished']}",
             f"- commit: {commit}",
             f"- machine: {machine.get('hostname')}, GPU {machine.get('gpu') or 'none'} x{machine.get('gpu_count', 0)}"
             f", {machine.get('cpu_count')} CPUs",
             f"- command: `{result['command']}`",
             f"- set: {result['set']} ({len(result['objects'])} of {result.get('set_size')} objects of "
             f"`{result['protocol_file']}`)",
             f"- protocol: {protocol_text}",
             f"- schedule: {schedule['name']}; " + "; ".join(f"{stage}: `{' '.join(args) or '(defaults)'}`"
                                                            for stage, args in schedule["stage_args"].items())
             + "".join(f"; extra {stage}: `{' '.join(args)}`" for stage, args in schedule.get("extra", {}).items()),
             f"- run: stages {' '.join(result['run']['stages'])}, {result['run']['jobs']} at a time on "
             f"{result['run']['gpus'] or 'the visible'} GPU(s), {result['run']['segmenter']} segmenter",
             "",
             "| objects | ok | " + " | ".join(header for header, _, _ in SUMMARY_COLUMNS) + " |",
             "|---:|---:|" + "---:|" * len(SUMMARY_COLUMNS),
             f"| {agg['objects']} | {agg['ok']} | "
             + " | ".join(cell(agg[key], decimals) for _, key, decimals in SUMMARY_COLUMNS) + " |",
             "",
             "Errors: mean over the objects that finished; accuracies: a failed object counts as wrong; "
             "Chamfer x1000.", "",
             "| object | open | status | stage 3 parts | types | Axis Ang | Axis Pos | Motion rev | Motion pris "
             "| Type Acc | parts gt/pred | CD-m | CD-w | PSNR | seconds |",
             "|---|---|---|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for obj in result["objects"]:
        summary = _summary(obj)
        stage3 = obj.get("stage3") or {}
        count = obj.get("part_count")
        status = obj["status"] if obj["status"] == "ok" else f"{obj['failure']['stage']} failed"
        seconds = " + ".join(f"{entry['seconds']:.0f}" for entry in obj["stages"].values())
        lines.append(" | ".join([
            f"| {obj['scene']}", obj["generator"].get("open_state", "?"), status,
            cell(stage3.get("num_parts"), 0),
            _types_text(stage3["joint_types"]) if "joint_types" in stage3 else "-",
            *(cell(summary.get(key), d) for key, d in (("axis_ang", 3), ("axis_pos", 4), ("motion_revolute_deg", 3),
                                                       ("motion_prismatic_m", 4), ("type_accuracy", 2))),
            f"{count['gt']}/{count['pred']}" if count else "-",
            cell(summary.get("cd_movable"), 3), cell(summary.get("cd_whole"), 3), cell(summary.get("psnr"), 2),
            f"{seconds} = {obj['seconds_total']:.0f}" if seconds else "-"]) + " |")
    failures = [obj for obj in result["objects"] if obj["failure"]]
    if failures:
        lines += ["", "## Failures"]
        for obj in failures:
            failure = obj["failure"]
            lines += ["", f"{obj['scene']}: {failure['stage']} exited {failure['returncode']} ({failure['log']})", "",
                      "```", *failure.get("log_tail", []), "```"]
    errors = [(obj["scene"], part, obj[part]["error"]) for obj in result["objects"] for part in ("stage3", "metrics")
              if isinstance(obj.get(part), dict) and "error" in obj[part]]
    if errors:
        lines += ["", "## Outputs that could not be read", ""]
        lines += [f"- {scene} {part}: {error}" for scene, part, error in errors]
    return "\n".join(lines) + "\n"
