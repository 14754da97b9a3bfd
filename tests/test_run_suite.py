"""The suite runner's bookkeeping: `--stages` runs only those stages, and the table keeps every stage's time across
runs of some stages or some scenes."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import run_suite  # noqa: E402


def row(scene: str, **seconds: float) -> dict:
    return {"scene": scene, "status": "ok", "seconds": {stage: seconds.get(stage) for stage in run_suite.STAGES}}


def test_merge_keeps_times_of_skipped_stages_and_other_scenes() -> None:
    previous = [row("drawers", masks=38, coarse=74, voxelize=96, train=63, render=49),
                row("cabinet", masks=40, coarse=309, voxelize=19)]
    merged = run_suite.merge_runs(previous, [{**row("cabinet", train=293, render=23), "status": "ok"}])
    assert [entry["scene"] for entry in merged] == ["cabinet", "drawers"]  # suite order
    assert merged[0]["seconds"] == {"masks": 40, "coarse": 309, "voxelize": 19, "train": 293, "render": 23}
    assert merged[1] == previous[0]
    failed = {**row("drawers", coarse=80), "status": "coarse failed"}
    merged = run_suite.merge_runs(merged, [failed])
    assert merged[1]["status"] == "coarse failed" and merged[1]["seconds"]["coarse"] == 80
    assert merged[1]["seconds"]["train"] == 63


def test_stages_option_runs_only_those_stages(tmp_path: Path, monkeypatch) -> None:
    ran, commands = [], []

    def fake_run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
        ran.append(Path(command[1]).name)
        commands.append(command)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(run_suite.subprocess, "run", fake_run)
    monkeypatch.setattr(run_suite, "given_joint_types", lambda scene_dir: "s,r")
    args = argparse.Namespace(
        data_root=str(tmp_path / "data"), output_root=str(tmp_path / "out"), subset="suite", schedule="short",
        segmenter="classic", stages=["train", "render"], extra=["train=--one_render_call --init_reach 0"], jobs=1)
    result = run_suite.run_scene(args, "cabinet", None)
    assert ran == ["train.py", "render.py"]
    assert result["status"] == "ok"
    assert [stage for stage, t in result["seconds"].items() if t is not None] == ["train", "render"]
    assert commands[0][-3:] == ["--one_render_call", "--init_reach", "0"] and "--init_reach" not in commands[1]
    with pytest.raises(SystemExit, match="STAGE=ARGS"):
        run_suite.stage_extras(["training=--x"])


def test_classic_stage1_gets_a_share_of_the_cores(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(run_suite, "given_joint_types", lambda scene_dir: "s,r")
    monkeypatch.setattr(run_suite.os, "sched_getaffinity", lambda pid: set(range(16)))
    args = argparse.Namespace(data_root=str(tmp_path), output_root=str(tmp_path), subset="suite", schedule="short",
                              segmenter="classic", jobs=3)
    assert run_suite.stage_commands(args, "cabinet")["masks"][-2:] == ["--workers", "5"]
    args.jobs = 1                                              # alone: stage 1's own default
    assert "--workers" not in run_suite.stage_commands(args, "cabinet")["masks"]
    args.segmenter, args.jobs = "sam", 3                       # SAM runs one image at a time
    assert "--workers" not in run_suite.stage_commands(args, "cabinet")["masks"]
