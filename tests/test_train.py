"""Stage 4 (train.py) on a tiny synthetic cabinet: inputs, initial logits, joint refinement, resume (equal to an
uninterrupted run), overwrite safety, the joint-types contract with stage 3, errors.

The stage-2 models here are surfels initialised from the depth point clouds (no coarse optimisation), so the test
exercises stage 4 alone; the end-to-end test runs the real stage 2.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import train
import voxelize
from data_tools.synthetic import generate_scene
from evaluation.metrics import evaluate_joints, load_gt_joints
from scene import Scene, initial_point_cloud
from scene.articulation import joint_to_matrix, matrix_to_joint
from scene.contract import STAGE_MARKER, TRAIN_LOG_NAME
from scene.gaussian_model import GaussianModel
from scene.trained_model import TrainedModel
from utils.get_mask import main as get_mask_main
from utils.io_utils import write_text
from utils.point_cloud import voxel_downsample
from utils.voxel_grid import VoxelGrid

COARSE_ITER = 7
FAST = ["--em_interval", "10", "--densify_from_iter", "5", "--densification_interval", "5", "--densify_until_iter",
        "18", "--log_interval", "5", "--quiet", "--data_device", "cpu", "--coarse_iter", str(COARSE_ITER)]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Scene (64 px, 10 views per state), stage-1 classic masks, point-cloud surfels as 'coarse' models, stage 3."""
    root = tmp_path_factory.mktemp("train")
    data, outputs = root / "data", root / "outputs"
    scene_dir = data / "gear" / "synthetic" / "cabinet"
    # The generator's old look (a hue per part, upright, fixed light): the short refinement below is sized for it.
    generate_scene("cabinet", scene_dir, res=64, views=10, test_views=2, seed=0, supersample=1, progress=False,
                   appearance="distinct", orientation="upright", lighting="fixed")
    assert get_mask_main(["--source_path", str(data), "--scene_name", "cabinet", "--output_root", str(outputs),
                          "--segmenter", "classic"]) == 0
    scene = Scene(scene_dir, -1, "cpu", splits=("train",))
    coarse = outputs / "gear" / "synthetic" / "cabinet" / "coarse_gs" / "point_cloud" / f"iteration_{COARSE_ITER}"
    for state in (0, 1):
        points, colours = voxel_downsample(*initial_point_cloud(scene, state, 0.01)[:2], 0.03)
        GaussianModel.from_point_cloud(points, colours, sh_degree=1, init_opacity=0.9).save_ply(
            coarse / f"point_cloud_{state}.ply")
    write_text(coarse / "larger_motion_state.txt", "1")  # the generator opens the door in the end state
    assert voxelize.main(["--source_path", str(data), "--dataset", "gear", "--subset", "synthetic", "--scene_name",
                          "cabinet", "--output_root", str(outputs), "--coarse_iter", str(COARSE_ITER),
                          "--voxel_size", "0.03"]) == 0
    return {"data": data, "outputs": outputs, "scene_dir": scene_dir, "coarse": coarse}


def _args(ws: dict, model_path: Path, *extra: str) -> list[str]:
    return ["--source_path", str(ws["data"]), "--output_root", str(ws["outputs"]), "--scene_name", "cabinet",
            "--model_path", str(model_path), *FAST, *extra]


def _joint_error(ws: dict, model_path: Path) -> dict:
    joints = TrainedModel.load(model_path, "final", "cpu").joints_start_to_end()
    return evaluate_joints(joints, load_gt_joints(ws["scene_dir"] / "gt" / "trans.json"))["parts"][0]


def test_initial_logits_mark_component_voxels() -> None:
    stage3 = train.Stage3Result(canonical_state=1, joint_types=["revolute"], transforms=np.eye(4)[None],
                                part_voxels=[np.array([[0, 0, 0], [1, 0, 0]])],
                                grid=VoxelGrid(np.zeros(3), 0.1, (3, 1, 1)))
    means = np.array([[0.05, 0.05, 0.05], [0.15, 0.01, 0.09], [0.25, 0.05, 0.05], [-0.05, 0.0, 0.0]])
    logits = train.initial_logits(means, stage3, static_logit=2.0, part_logit=3.0)
    assert logits.tolist() == [[-3.0, 3.0], [-3.0, 3.0], [2.0, 0.0], [2.0, 0.0]]


def test_initial_logits_reach_label_surfels_off_the_voxels_by_the_nearest_one() -> None:
    """With a reach, a surfel in no occupied voxel takes the class of the nearest occupied voxel within it (stage 3's
    voxels hold the rendered surface, a surfel centre may sit just off it); surfels in voxels keep theirs."""
    grid = VoxelGrid(np.zeros(3), 0.1, (8, 1, 1))
    stage3 = train.Stage3Result(canonical_state=1, joint_types=["prismatic"], transforms=np.eye(4)[None],
                                part_voxels=[np.array([[5, 0, 0]])], grid=grid,
                                static_voxels=np.array([[0, 0, 0], [1, 0, 0]]))
    #             in part voxel 5, beside it, beside static voxel 1, nearer the part, in static voxel 1
    xs = np.array([0.55, 0.68, 0.25, 0.38, 0.15])
    means = np.stack([xs, np.full(5, 0.05), np.full(5, 0.05)], axis=1)
    assert train.initial_logits(means, stage3, 2.0, 3.0).argmax(1).tolist() == [1, 0, 0, 0, 0]
    assert train.initial_logits(means, stage3, 2.0, 3.0, reach=1.5).argmax(1).tolist() == [1, 1, 0, 0, 0]
    assert train.initial_logits(means, stage3, 2.0, 3.0, reach=2.0).argmax(1).tolist() == [1, 1, 0, 1, 0]


def test_em_phases_alternate() -> None:
    class Args:
        em_interval = 4000

    phases = [train.Refinement.phase(type("R", (), {"config": Args})(), it) for it in (1, 4000, 4001, 8000, 8001)]
    assert phases == ["E", "E", "M", "M", "E"]


def test_refinement_reduces_a_perturbed_joint_error(workspace: dict, tmp_path: Path) -> None:
    """Stage 3's door motion made 6 deg too large: 40 iterations (E, M, E, M; densification in E) shrink the error."""
    coarse = workspace["coarse"]
    backup = tmp_path / "backup"
    shutil.copytree(coarse, backup)
    try:
        with np.load(coarse / "joint_voxel_info.npz") as arrays:
            saved = dict(arrays)
        joint = matrix_to_joint(saved["transforms"][0], "revolute")
        joint["motion"] += 6.0 if joint["motion"] > 0 else -6.0
        saved["transforms"] = joint_to_matrix(joint)[None]
        np.savez(coarse / "joint_voxel_info.npz", **saved)
        model_path = tmp_path / "gear"
        assert train.main(_args(workspace, model_path, "--iterations", "1", "--checkpoint_iterations", "1")) == 0
        before = _joint_error(workspace, model_path)
        shutil.rmtree(model_path)
        assert train.main(_args(workspace, model_path, "--iterations", "40", "--checkpoint_iterations", "20",
                                "--joint_lr_init", "3e-3", "--joint_lr_final", "3e-3")) == 0
        after = _joint_error(workspace, model_path)
    finally:
        shutil.rmtree(coarse)
        shutil.copytree(backup, coarse)
    assert before["motion"] > 4.0
    assert after["motion"] < before["motion"] - 1.0
    log = [json.loads(line) for line in (model_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in log] == ["E", "E", "M", "M", "E", "E", "M", "M"]
    assert all(np.isfinite(r["loss"]["total"]) for r in log)
    assert "prior" in log[0]["loss"] and "smooth" in log[0]["loss"] and "prior" not in log[2]["loss"]
    for iteration in (20, 40):
        folder = model_path / "point_cloud" / f"iteration_{iteration}"
        assert (folder / "point_cloud.ply").is_file() and (folder / "articulation.json").is_file()
        assert (model_path / f"chkpnt{iteration}.pth").is_file()
    summary = json.loads((model_path / "train_summary.json").read_text())
    assert summary["canonical_state"] == 1 and len(summary["part_counts"]) == 2
    assert summary["peak_gpu_memory_gib"] is None  # a CPU run


def test_resume_continues_from_the_latest_checkpoint(workspace: dict, tmp_path: Path) -> None:
    model_path = tmp_path / "gear"
    assert train.main(_args(workspace, model_path, "--iterations", "6", "--checkpoint_iterations", "4",
                            "--anchor", "data")) == 0
    (model_path / "point_cloud" / "iteration_6" / "articulation.json").unlink()
    (model_path / "chkpnt6.pth").unlink()
    assert train.main(_args(workspace, model_path, "--iterations", "6", "--checkpoint_iterations", "4",
                            "--anchor", "data")) == 0
    summary = json.loads((model_path / "train_summary.json").read_text())
    assert summary["resumed_from"] == 4
    # done: a third call trains nothing
    assert train.main(_args(workspace, model_path, "--iterations", "6", "--anchor", "data")) == 0
    assert json.loads((model_path / "train_summary.json").read_text())["resumed_from"] == 4


def test_missing_inputs_name_the_file_and_the_stage(workspace: dict, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    assert train.main(_args(workspace, tmp_path / "a", "--coarse_iter", "99")) == 2
    err = capsys.readouterr().err
    assert "iteration_99/joint_voxel_info.json is missing" in err and "scripts/3_voxelize.sh" in err
    masks = workspace["outputs"] / "gear" / "synthetic" / "cabinet" / "masks" / "end" / "train"
    hidden = tmp_path / "masks"
    shutil.move(masks, hidden)
    try:
        assert train.main(_args(workspace, tmp_path / "b", "--iterations", "2")) == 2
        err = capsys.readouterr().err
        assert "10 stage-1 label maps of the end training views are missing" in err
        assert str(masks / "0000.npy") in err and "scripts/1_get_mask.sh" in err
        assert train.main(_args(workspace, tmp_path / "c", "--iterations", "2", "--lambda_prior", "0",
                                "--anchor", "data")) == 0
    finally:
        shutil.move(hidden, masks)
    assert train.main(_args(workspace, tmp_path / "d", "--joint_types", "s,r,p")) == 2
    assert "is not what stage 3 assigned to its 1 movable parts (1 revolute)" in capsys.readouterr().err


def test_non_finite_losses_are_dropped_and_non_finite_parameters_stop(workspace: dict, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    model_path = tmp_path / "gear"
    original = train.image_loss_terms
    monkeypatch.setattr(train, "image_loss_terms", lambda *a, **k: original(*a, **k) * torch.tensor(float("nan")))
    assert train.main(_args(workspace, model_path, "--iterations", "4", "--checkpoint_iterations", "4",
                            "--anchor", "data")) == 0
    summary = json.loads((model_path / "train_summary.json").read_text())
    assert summary["dropped_steps"] >= 4  # every step's loss was NaN: all dropped, the model unchanged and finite
    monkeypatch.setattr(train, "image_loss_terms", original)
    good = (model_path / "chkpnt4.pth").read_bytes()
    step = train.Refinement.step

    def corrupting_step(self: train.Refinement, iteration: int, generator: torch.Generator) -> dict:
        terms = step(self, iteration, generator)
        if iteration == 6:
            with torch.no_grad():
                self.gaussians.params["means"][0, 0] = float("nan")
        return terms

    monkeypatch.setattr(train.Refinement, "step", corrupting_step)
    assert train.main(_args(workspace, model_path, "--iterations", "10", "--checkpoint_iterations", "8",
                            "--anchor", "data")) == 3
    assert (model_path / "chkpnt4.pth").read_bytes() == good
    assert not (model_path / "chkpnt8.pth").exists()


def test_small_revolute_joints_switch_to_prismatic_only_when_guessed(workspace: dict, tmp_path: Path) -> None:
    """A threshold above stage 3's door angle makes the door 'small': stage 3's guess switches, a given type does
    not."""
    info = json.loads((workspace["coarse"] / "joint_voxel_info.json").read_text())
    threshold = str(abs(info["parts"][0]["joint"]["motion"]) + 10.0)
    switch = ["--iterations", "3", "--prismatic_switch_iter", "2", "--prismatic_switch_angle", threshold,
              "--checkpoint_iterations", "3", "--anchor", "data"]
    assert train.main(_args(workspace, tmp_path / "guessed", *switch)) == 0
    assert train.main(_args(workspace, tmp_path / "given", *switch, "--joint_types", "s,r")) == 0
    guessed = TrainedModel.load(tmp_path / "guessed", "final", "cpu").articulation.joint_types
    given = TrainedModel.load(tmp_path / "given", "final", "cpu").articulation.joint_types
    assert guessed == ["prismatic"] and given == ["revolute"]


def test_one_render_call_runs_the_same_schedule(workspace: dict, tmp_path: Path) -> None:
    """One render call (the default) and two (--no-one_render_call) draw the same views over the same backgrounds
    through E and M phases and densification:
    on the CPU (where render_each renders each view on its own) the run is the same; on the GPU
    tests/test_renderer_cuda.py checks that the one gsplat call equals the two renders. The same to the bit on an idle
    CPU, but two runs of one setting differed by about 1e-7 while another process loaded the cores, hence the
    tolerances."""
    runs = {}
    for name, extra in (("two", ["--no-one_render_call"]), ("one", ["--one_render_call"])):
        model_path = tmp_path / name
        assert train.main(_args(workspace, model_path, "--iterations", "12", "--checkpoint_iterations", "12",
                                "--anchor", "data", "--random_bg_color", *extra)) == 0
        log = [json.loads(line) for line in (model_path / "train_log.jsonl").read_text().splitlines()]
        runs[name] = (log, TrainedModel.load(model_path, "final", "cpu"))
    (log_two, model_two), (log_one, model_one) = runs["two"], runs["one"]
    assert [r["phase"] for r in log_one] == ["E", "E", "M"] and len(log_one) == len(log_two)
    assert torch.allclose(model_one.gaussians.get_xyz, model_two.gaussians.get_xyz, rtol=0, atol=1e-6)
    for one, two in ((log_one, log_two), (model_one.joints_start_to_end(), model_two.joints_start_to_end())):
        (numbers_one, rest_one), (numbers_two, rest_two) = _split(one), _split(two)
        assert rest_one == rest_two and numbers_one == pytest.approx(numbers_two, rel=1e-5, abs=1e-7)


def _split(value: object) -> tuple[list[float], list]:
    """The floats of a nested structure of dicts, lists and scalars, in order, and everything else (keys, strings,
    integers, ...) in order: to compare floats with a tolerance and the rest exactly."""
    if isinstance(value, dict):
        parts = [([], sorted(value))] + [_split(value[key]) for key in sorted(value)]
    elif isinstance(value, (list, tuple)):
        parts = [_split(entry) for entry in value]
    else:
        return ([value], []) if isinstance(value, float) else ([], [value])
    return [x for numbers, _ in parts for x in numbers], [x for _, rest in parts for x in rest]


# ---------------------------------------------------------------------------- joint types, resume, overwrite
def test_joint_types_must_be_stage3s_multiset(workspace: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Stage 3 found a revolute door: --joint_types s,p does not turn it into a drawer; the error says to give the
    types to stage 3. The same multiset is accepted (each part keeps stage 3's type)."""
    assert train.main(_args(workspace, tmp_path / "p", "--joint_types", "s,p", "--iterations", "1")) == 2
    err = capsys.readouterr().err
    assert "--joint_types 's,p' (1 prismatic) is not what stage 3 assigned" in err and "(1 revolute)" in err
    assert "give the types to stage 3" in err and "JOINT_TYPES=s,p bash scripts/3_voxelize.sh" in err
    assert not (tmp_path / "p").exists()
    stage3 = train.Stage3Result(canonical_state=1, joint_types=["prismatic", "revolute", "prismatic"],
                                transforms=np.tile(np.eye(4), (3, 1, 1)), part_voxels=[np.zeros((1, 3))] * 3,
                                grid=VoxelGrid(np.zeros(3), 0.1, (3, 1, 1)))
    assert train.resolve_types("s,r,p,p", stage3) == (["prismatic", "revolute", "prismatic"], [True] * 3)
    assert train.resolve_types("auto", stage3) == (["prismatic", "revolute", "prismatic"], [False] * 3)
    with pytest.raises(ValueError, match="2 prismatic, 1 revolute"):
        train.resolve_types("s,r,r,p", stage3)


def test_the_training_script_leaves_joint_types_to_stage3() -> None:
    env = {**os.environ, "PYTHON": "echo", "SCENES": "a", "JOINT_TYPES": "s,p"}
    result = subprocess.run(["bash", str(Path(train.__file__).parent / "scripts" / "4_train.sh")], env=env,
                            capture_output=True, text=True, check=True)
    words = result.stdout.split()
    assert words[0] == "train.py" and "--joint_types" not in words
    pairs = dict(zip(words[1::2], words[2::2]))
    assert pairs["--model_name"] == "gear" and pairs["--coarse_name"] == "coarse_gs"


class Interrupted(Exception):
    """Stands for a killed process in the resume test."""


def test_a_resumed_run_equals_an_uninterrupted_one(workspace: dict, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after the checkpoint at 4 (densification at 3 in the E phase 1-4, the M phase 5-8, random
    backgrounds), resumed: the same surfels, logits and joints as a run that was never interrupted, and the log
    holds each record once."""
    extra = ["--iterations", "8", "--checkpoint_iterations", "4", "--log_interval", "2", "--random_bg_color",
             "--anchor", "data", "--em_interval", "4", "--densify_from_iter", "2", "--densification_interval", "3",
             "--resolution", "32"]
    reference = tmp_path / "reference"
    assert train.main(_args(workspace, reference, *extra)) == 0
    resumed = tmp_path / "resumed"
    step = train.Refinement.step

    def killed_at_6(self: train.Refinement, iteration: int, generator: torch.Generator) -> dict:
        if iteration == 6:
            raise Interrupted
        return step(self, iteration, generator)

    monkeypatch.setattr(train.Refinement, "step", killed_at_6)
    with pytest.raises(Interrupted):
        train.main(_args(workspace, resumed, *extra))
    monkeypatch.setattr(train.Refinement, "step", step)
    assert train.main(_args(workspace, resumed, *extra)) == 0
    assert json.loads((resumed / "train_summary.json").read_text())["resumed_from"] == 4
    a, b = (TrainedModel.load(path, "final", "cpu") for path in (reference, resumed))
    assert a.gaussians.num_points == b.gaussians.num_points
    for name, value in a.gaussians.params.items():
        torch.testing.assert_close(value, b.gaussians.params[name], rtol=0, atol=1e-6)
    for joint_a, joint_b in zip(a.joints_start_to_end(), b.joints_start_to_end()):
        assert joint_a["type"] == joint_b["type"] and joint_a["motion"] == pytest.approx(joint_b["motion"], abs=1e-5)
    logs = [[json.loads(line) for line in (path / TRAIN_LOG_NAME).read_text().splitlines()]
            for path in (reference, resumed)]
    assert [r["iteration"] for r in logs[1]] == [r["iteration"] for r in logs[0]] == [2, 4, 6, 8]
    for one, two in zip(*logs):
        assert one["loss"]["total"] == pytest.approx(two["loss"]["total"], rel=1e-5, abs=1e-7)


def test_overwrite_keeps_unrelated_files_and_refuses_foreign_folders(workspace: dict, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture) -> None:
    model_path = tmp_path / "gear"
    extra = ["--iterations", "2", "--checkpoint_iterations", "2", "--anchor", "data"]
    assert train.main(_args(workspace, model_path, *extra)) == 0
    assert json.loads((model_path / STAGE_MARKER).read_text()) == {"stage": "train"}
    (model_path / "notes.txt").write_text("keep me")
    (model_path / "eval").mkdir()
    (model_path / "eval" / "metrics.json").write_text("{}")  # stage 5's outputs of the old model go with it
    assert train.main(_args(workspace, model_path, *extra, "--overwrite")) == 0
    assert (model_path / "notes.txt").read_text() == "keep me" and not (model_path / "eval").exists()
    assert json.loads((model_path / "train_summary.json").read_text())["resumed_from"] == 0
    # a bad input with --overwrite: found first, nothing deleted
    before = sorted(model_path.rglob("*"))
    assert train.main(_args(workspace, model_path, *extra, "--overwrite", "--coarse_iter", "99")) == 2
    assert sorted(model_path.rglob("*")) == before
    # `--model_path .` in a folder of other work, and stage 2's model folder, are refused untouched
    work = tmp_path / "work"
    work.mkdir()
    (work / "results.txt").write_text("unrelated")
    monkeypatch.chdir(work)
    for path in (".", str(workspace["coarse"].parent.parent)):
        listing = sorted(Path(path).rglob("*"))
        assert train.main(_args(workspace, Path(path), *extra, "--overwrite")) == 2
        assert "model folder" in capsys.readouterr().err and sorted(Path(path).rglob("*")) == listing


def test_corrupt_checkpoint_and_stage3_arrays_name_the_file(workspace: dict, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    model_path = tmp_path / "gear"
    extra = ["--iterations", "4", "--checkpoint_iterations", "2", "--anchor", "data"]
    assert train.main(_args(workspace, model_path, *extra)) == 0
    (model_path / "point_cloud" / "iteration_4" / "articulation.json").unlink()
    checkpoint = model_path / "chkpnt4.pth"
    checkpoint.write_bytes(checkpoint.read_bytes()[:200])  # cut short, as a full disk leaves it
    assert train.main(_args(workspace, model_path, *extra)) == 2
    err = capsys.readouterr().err
    assert f"cannot read checkpoint {checkpoint}" in err and "--overwrite" in err
    npz = workspace["coarse"] / "joint_voxel_info.npz"
    saved = npz.read_bytes()
    try:
        npz.write_bytes(saved[: len(saved) // 2])
        assert train.main(_args(workspace, tmp_path / "other", *extra)) == 2
        err = capsys.readouterr().err
        assert f"cannot read stage-3 arrays {npz}" in err and "3_voxelize.sh" in err
    finally:
        npz.write_bytes(saved)
