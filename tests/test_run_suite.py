"""The benchmark suite: stage commands that take nothing from the ground truth (both protocols, and the demo), the
given-types table, `--stages`, the committed result files and make_table's README section. CPU only, no training:
the stages are replaced by a fake `subprocess.run`."""
from __future__ import annotations

import argparse
import builtins
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import make_table, run_suite, suite_results  # noqa: E402

FORBIDDEN = re.compile(r"gt/|trans\.json|load_gt_joints|given_joint_types")


def suite_args(tmp_path: Path, **overrides) -> argparse.Namespace:
    values = dict(data_root=str(tmp_path / "data"), output_root=str(tmp_path / "out"), subset="bench_dev",
                  schedule="short", segmenter="classic", stages=list(run_suite.STAGES), extra=None, jobs=1,
                  protocol="auto", types_table=str(run_suite.TYPES_TABLE))
    values.update(overrides)
    return argparse.Namespace(**values)


# ------------------------------------------------------------------------------------------ no ground truth as input
def test_stage_commands_take_nothing_from_the_ground_truth(tmp_path: Path, monkeypatch) -> None:
    """Every stage command of every protocol object, in both protocols, is built without opening or naming anything
    under a scene's ground-truth folder (decoy ground truth is there to be found)."""
    objects = {name: run_suite.load_protocol(run_suite.PROTOCOL_FILE, name)[1] for name in run_suite.SETS}
    for name, objs in objects.items():
        for obj in objs:
            gt = tmp_path / "data" / "gear" / run_suite.subset_of(name) / obj.scene / "gt"
            gt.mkdir(parents=True)
            (gt / "trans.json").write_text(json.dumps({"trans_info": [{"type": "rotate"}] * 9}))
    touched: list[str] = []

    def recording(function):
        def wrapper(path, *args, **kwargs):
            touched.append(str(path))
            return function(path, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(builtins, "open", recording(builtins.open))
    monkeypatch.setattr(io, "open", recording(io.open))
    for method in ("open", "read_text", "read_bytes", "exists", "is_file", "is_dir", "stat"):
        monkeypatch.setattr(Path, method, recording(getattr(Path, method)))
    built = []
    for protocol in run_suite.PROTOCOLS:
        for name, objs in objects.items():
            args = suite_args(tmp_path, protocol=protocol, subset=run_suite.subset_of(name), jobs=3)
            for obj in objs:
                built.append((protocol, obj.scene, run_suite.stage_commands(args, obj.scene)))
    monkeypatch.undo()

    assert len(built) == 2 * sum(len(objs) for objs in objects.values())
    for protocol, scene, commands in built:
        assert list(commands) == list(run_suite.STAGES)
        for stage, command in commands.items():
            assert not [arg for arg in command if FORBIDDEN.search(arg)], (protocol, scene, stage, command)
        voxelize = commands["voxelize"]
        assert ("--joint_types" in voxelize) == ("--num_parts" in voxelize) == (protocol == "given-types")
        for flag in ("--source_path", "--dataset", "--subset", "--scene_name", "--output_root", "--coarse_name",
                     "--coarse_iter"):
            assert flag in voxelize
    assert touched and not [path for path in touched if FORBIDDEN.search(path)], touched
    assert {Path(path).name for path in touched} <= {run_suite.TYPES_TABLE.name}  # the table file, nothing else


def test_scripts_and_suite_name_no_ground_truth() -> None:
    """The suite and the shell scripts (the demo included) do not mention the ground-truth files or readers."""
    for path in [*sorted((ROOT / "scripts").glob("*.sh")), ROOT / "benchmarks" / "run_suite.py"]:
        hits = [line for line in path.read_text().splitlines() if FORBIDDEN.search(line)]
        assert not hits, (path, hits)
    demo = (ROOT / "scripts" / "demo.sh").read_text()
    assert "--joint_types" not in demo and "--num_parts" not in demo  # stage 3 in auto mode


def test_given_types_come_from_the_table(tmp_path: Path) -> None:
    args = suite_args(tmp_path, protocol="given-types")
    voxelize = run_suite.stage_commands(args, "storage_seed0")["voxelize"]
    table = json.loads(run_suite.TYPES_TABLE.read_text())["gear"]["storage_seed0"]
    letters = ",".join(["s", *(t[0] for t in table)])
    assert voxelize[-4:] == ["--num_parts", str(len(table) + 1), "--joint_types", letters]
    assert "--joint_types" not in run_suite.stage_commands(suite_args(tmp_path), "storage_seed0")["voxelize"]


def test_given_types_table_errors_name_the_file_and_scene(tmp_path: Path, capsys) -> None:
    table = tmp_path / "types.json"
    table.write_text(json.dumps({"gear": {"cabinet_seed0": ["revolute"]}}))
    assert run_suite.given_types(table, "cabinet_seed0") == ["revolute"]
    with pytest.raises(run_suite.ProtocolError, match=rf"{re.escape(str(table))}.*'fridge_seed0'"):
        run_suite.given_types(table, "fridge_seed0")
    with pytest.raises(run_suite.ProtocolError, match=re.escape(str(tmp_path / "absent.json"))):
        run_suite.given_types(tmp_path / "absent.json", "cabinet_seed0")
    table.write_text(json.dumps({"gear": {"cabinet_seed0": ["hinge"]}}))
    with pytest.raises(run_suite.ProtocolError, match="cabinet_seed0"):
        run_suite.given_types(table, "cabinet_seed0")
    # `run` stops before any stage when the table lacks an object of the set
    table.write_text(json.dumps({"gear": {"cabinet_seed0": ["revolute"]}}))
    code = run_suite.main(["run", "--set", "dev", "--protocol", "given-types", "--types_table", str(table),
                           "--objects", "cabinet_seed0", "fridge_seed0", "--results_dir", str(tmp_path / "res"),
                           "--output_root", str(tmp_path / "out")])
    assert code == 2 and "fridge_seed0" in capsys.readouterr().err
    assert not (tmp_path / "res").exists() and not (tmp_path / "out").exists()


def test_committed_table_covers_both_sets() -> None:
    table = json.loads(run_suite.TYPES_TABLE.read_text())["gear"]
    for name in run_suite.SETS:
        for obj in run_suite.load_protocol(run_suite.PROTOCOL_FILE, name)[1]:
            assert run_suite.given_types(run_suite.TYPES_TABLE, obj.scene) == table[obj.scene]


# ------------------------------------------------------------------------------------------------ running stages
def test_stages_option_runs_only_those_stages(tmp_path: Path, monkeypatch) -> None:
    ran, commands = [], []

    def fake_run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
        ran.append(Path(command[1]).name)
        commands.append(command)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(run_suite.subprocess, "run", fake_run)
    args = suite_args(tmp_path, stages=["train", "render"], extra=["train=--one_render_call --init_reach 0"])
    result = run_suite.run_scene(args, "cabinet_seed0", None)
    assert ran == ["train.py", "render.py"]
    assert result["status"] == "ok" and result["failure"] is None
    assert list(result["stages"]) == ["train", "render"]
    assert commands[0][-3:] == ["--one_render_call", "--init_reach", "0"] and "--init_reach" not in commands[1]
    with pytest.raises(SystemExit, match="STAGE=ARGS"):
        run_suite.stage_extras(["training=--x"])


def test_classic_stage1_gets_a_share_of_the_cores(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(run_suite.os, "sched_getaffinity", lambda pid: set(range(16)))
    args = suite_args(tmp_path, jobs=3)
    assert run_suite.stage_commands(args, "cabinet_seed0")["masks"][-2:] == ["--workers", "5"]
    args.jobs = 1                                              # alone: stage 1's own default
    assert "--workers" not in run_suite.stage_commands(args, "cabinet_seed0")["masks"]
    args.segmenter, args.jobs = "sam", 3                       # SAM runs one image at a time
    assert "--workers" not in run_suite.stage_commands(args, "cabinet_seed0")["masks"]


# ------------------------------------------------------------------------------------------------- result files
def fake_stages(fail: dict[str, str]):
    """A `subprocess.run` standing in for the five entry points: stage 3 and 5 write their outputs; the scene's
    stage named in `fail` prints a traceback and exits 1."""
    def fake_run(command: list[str], stdout=None, **kwargs) -> subprocess.CompletedProcess:
        stage = {"get_mask.py": "masks", "coarse.py": "coarse", "voxelize.py": "voxelize", "train.py": "train",
                 "render.py": "render"}[Path(command[1]).name]
        value = dict(zip(command[2::2], command[3::2]))
        scene = value.get("--scene_name") or value["--dataset_path"].split("/")[-1]
        out = Path(value["--output_root"]) / "gear" / (value.get("--subset") or "bench_dev") / scene
        if fail.get(scene) == stage:
            stdout.write("".join(f"line {i}\n" for i in range(50)) + "RuntimeError: out of memory\n")
            return subprocess.CompletedProcess(command, 1)
        if stage == "voxelize":
            folder = out / "coarse_gs" / "point_cloud" / f"iteration_{value['--coarse_iter']}"
            folder.mkdir(parents=True, exist_ok=True)
            parts = [{"part": 1, "joint_type": "revolute"}, {"part": 2, "joint_type": "prismatic"}]
            (folder / "joint_voxel_info.json").write_text(json.dumps({"parts": parts, "joint_types_source": "guess"}))
        if stage == "render":
            (out / "gear" / "eval").mkdir(parents=True, exist_ok=True)
            summary = {"axis_ang": 0.5, "axis_pos": 0.002, "motion_revolute_deg": 1.0, "motion_prismatic_m": None,
                       "type_accuracy": 0.5, "cd_movable": 0.2, "cd_whole": 3.0, "psnr": 40.0}
            joints = {"matched": [0, -1], "unmatched_pred": [1]}
            (out / "gear" / "eval" / "metrics.json").write_text(json.dumps({"summary": summary, "joints": joints}))
        return subprocess.CompletedProcess(command, 0)
    return fake_run


def test_run_writes_a_result_file_with_failures(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(run_suite.subprocess, "run", fake_stages({"fridge_seed0": "coarse"}))
    monkeypatch.setattr(suite_results, "machine_info",
                        lambda: {"hostname": "box", "cpu_count": 16, "cpu_affinity": 16, "gpu": "NVIDIA H100",
                                 "gpu_count": 1})
    monkeypatch.setattr(suite_results, "repo_state", lambda root: {"commit": "abcdef0123456789", "dirty": True})
    results = tmp_path / "results"
    argv = ["run", "--set", "dev", "--objects", "cabinet_seed0", "fridge_seed0", "--schedule", "quick", "--jobs",
            "2", "--data_root", str(tmp_path / "data"), "--output_root", str(tmp_path / "out"), "--results_dir",
            str(results)]
    assert run_suite.main(argv) == 1                      # a failed object: nonzero exit, still recorded
    [path] = results.glob("*.json")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_dev_auto_quick_abcdef0-dirty\.json", path.name)
    assert path.with_suffix(".md").is_file()
    result = json.loads(path.read_text())
    assert result["commit"] == "abcdef0123456789" and result["dirty"] is True
    assert result["machine"]["gpu"] == "NVIDIA H100" and result["machine"]["hostname"] == "box"
    assert result["command"].startswith("python benchmarks/run_suite.py run --set dev")
    assert result["protocol"] == {"name": "auto"} and result["set"] == "dev" and result["set_size"] == 16
    assert result["schedule"]["name"] == "quick"
    assert result["schedule"]["stage_args"]["coarse"] == run_suite.SCHEDULES["quick"]["coarse"]
    assert result["run"]["stages"] == list(run_suite.STAGES) and result["run"]["jobs"] == 2
    cabinet, fridge = result["objects"]
    assert (cabinet["scene"], cabinet["category"], cabinet["seed"]) == ("cabinet_seed0", "cabinet", 0)
    assert cabinet["generator"]["res"] == 400 and cabinet["generator"]["open_state"] == "end"
    assert cabinet["generator"]["appearance"] == "material"
    assert cabinet["status"] == "ok" and cabinet["failure"] is None
    assert list(cabinet["stages"]) == list(run_suite.STAGES)
    assert all(entry["returncode"] == 0 and entry["seconds"] >= 0 for entry in cabinet["stages"].values())
    assert cabinet["stage3"] == {"num_parts": 3, "joint_types": ["revolute", "prismatic"],
                                 "joint_types_source": "guess"}
    assert cabinet["metrics"]["axis_ang"] == 0.5 and cabinet["part_count"] == {"gt": 2, "pred": 2}
    assert "--joint_types" not in cabinet["commands"]["voxelize"]
    assert fridge["status"] == "failed" and list(fridge["stages"]) == ["masks", "coarse"]
    assert fridge["stages"]["coarse"]["returncode"] == 1
    assert fridge["failure"]["stage"] == "coarse" and fridge["failure"]["returncode"] == 1
    assert fridge["failure"]["log_tail"][-1] == "RuntimeError: out of memory"
    assert len(fridge["failure"]["log_tail"]) == suite_results.LOG_TAIL_LINES
    assert fridge["stage3"] is None and fridge["metrics"] is None and fridge["part_count"] is None
    markdown = path.with_suffix(".md").read_text()
    assert "fridge_seed0: coarse exited 1" in markdown and "RuntimeError: out of memory" in markdown
    # a second run on the same day and commit gets its own file
    monkeypatch.setattr(run_suite.subprocess, "run", fake_stages({}))
    assert run_suite.main([*argv[:4], "cabinet_seed0", *argv[6:], "--stages", "render"]) == 0
    assert len(list(results.glob("*.json"))) == 2


# ------------------------------------------------------------------------------------------------ README table
def fake_result(date: str, commit: str, objects: list[dict], protocol: str = "auto") -> dict:
    return suite_results.build_result(
        started=date, finished=date, repo={"commit": commit, "dirty": False},
        machine={"hostname": "box", "cpu_count": 16, "gpu": "NVIDIA H200", "gpu_count": 1}, command="python x",
        set_name="dev", protocol_file="benchmarks/protocol.json", set_size=len(objects), protocol={"name": protocol},
        schedule={"name": "short", "stage_args": {}, "extra": {}},
        run={"stages": list(run_suite.STAGES), "jobs": 2, "gpus": 1, "segmenter": "classic"}, objects=objects)


def fake_object(scene: str, seconds: float, metrics: dict | None, count: tuple[int, int] | None = None) -> dict:
    failure = None if metrics else {"stage": "train", "returncode": 1, "log": "train.log", "log_tail": ["boom"]}
    return {"scene": scene, "category": scene, "seed": 0, "generator": {"open_state": "end"},
            "status": "ok" if metrics else "failed", "stages": {"masks": {"seconds": seconds, "returncode": 0}},
            "seconds_total": seconds, "failure": failure, "stage3": None, "metrics": metrics,
            "part_count": None if count is None else {"gt": count[0], "pred": count[1]}, "commands": {}}


def test_make_table_means_and_readme_section(tmp_path: Path, capsys) -> None:
    first = fake_result("2026-12-08T10:00:00+00:00", "1111111aaaa", [
        fake_object("a", 100, {"axis_ang": 1.0, "axis_pos": 0.01, "motion_revolute_deg": 2.0,
                               "motion_prismatic_m": None, "type_accuracy": 1.0, "cd_movable": 0.5,
                               "cd_whole": None}, (2, 2)),
        fake_object("b", 300, {"axis_ang": 3.0, "axis_pos": None, "motion_revolute_deg": None,
                               "motion_prismatic_m": 0.02, "type_accuracy": 0.5, "cd_movable": 1.5,
                               "cd_whole": 4.0}, (2, 3)),
        fake_object("c", 50, None)])
    second = fake_result("2026-12-07T10:00:00+00:00", "2222222bbbb", [
        fake_object("a", 10, {"axis_ang": 0.25, "type_accuracy": 1.0}, (1, 1))], protocol="given-types")
    paths = []
    for name, result in (("one.json", first), ("two.json", second)):
        paths.append(tmp_path / name)
        paths[-1].write_text(json.dumps(result))
    agg = suite_results.aggregate(first)
    assert agg["objects"] == 3 and agg["ok"] == 2
    assert agg["axis_ang"] == pytest.approx(2.0) and agg["axis_pos"] == pytest.approx(0.01)
    assert agg["motion_revolute_deg"] == pytest.approx(2.0) and agg["motion_prismatic_m"] == pytest.approx(0.02)
    assert agg["type_accuracy"] == pytest.approx(0.5)           # (1 + 0.5 + 0 for the failed object) / 3
    assert agg["count_accuracy"] == pytest.approx(1 / 3)        # a: right, b: wrong, c: failed
    assert agg["cd_movable"] == pytest.approx(1.0) and agg["cd_whole"] == pytest.approx(4.0)
    assert agg["median_seconds"] == pytest.approx(200)          # over the finished objects

    readme = tmp_path / "README.md"
    before, after = "# Title\n\nIntro.\n<!-- results:begin -->\n", "<!-- results:end -->\n\nMore text.\n"
    readme.write_text(before + "old table\n" + after)
    assert make_table.main([str(p) for p in paths] + ["--readme", str(readme)]) == 0
    printed = capsys.readouterr().out
    text = readme.read_text()
    assert text.startswith(before) and text.endswith(after) and "old table" not in text
    rows = [line for line in printed.splitlines() if line.startswith("| 2026")]
    assert [row.split(" | ")[0] for row in rows] == ["| 2026-12-07", "| 2026-12-08"]  # by date
    assert rows[0].split(" | ")[1:8] == ["2222222", "NVIDIA H200", "dev", "given-types", "short", "1", "1"]
    cells = rows[1].strip("| ").split(" | ")
    assert cells[6:] == ["3", "2", "2.000", "0.0100", "2.000", "0.0200", "0.50", "0.33", "1.000", "4.000", "200"]
    assert printed in text

    readme.write_text("no markers here\n")
    assert make_table.main([str(paths[0]), "--readme", str(readme)]) == 2
    assert readme.read_text() == "no markers here\n"
    assert "results:begin" in capsys.readouterr().err
