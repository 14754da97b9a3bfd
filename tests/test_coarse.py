"""Tests of stage 2 (coarse.py, scripts/2_coarse.sh) and the larger-motion-state rule (utils/motion_state.py).

Scenes come from the synthetic generator at 24-48 px; their initial point clouds are back-projected depth voxelised
at 6 cm (instead of the stage's 1 cm) so that the CPU reference renderer trains a few hundred iterations in seconds.
Ground truth (gt/, open_state) is read here only, never by the stage.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import trimesh

import coarse
from data_tools.objects import build_object, categories
from data_tools.synthetic import generate_scene
from scene.camera_points import backproject_depth
from scene.contract import COARSE_SUMMARY_NAME, LARGER_MOTION_NAME, STAGE_MARKER, initial_point_cloud_path
from scene.dataset_readers import load_cameras
from scene.gaussian_model import GaussianModel
from training.checkpoints import load_checkpoint
from utils.motion_state import larger_motion_state, motion_excesses, remove_isolated, voxel_centres
from utils.point_cloud import read_point_ply, voxel_downsample, write_point_ply

REPO = Path(__file__).resolve().parents[1]
INIT_VOXEL = 0.06  # initial point-cloud density of the test scenes (the stage's default is 0.01)
# A short schedule: densification from iteration 50, every 50; every loss term active from 100; a faster opacity
# rate so that a few hundred iterations make surfels opaque (the larger-motion test uses opacity >= 0.5).
SHORT = ["--data_device", "cpu", "--densify_from_iter", "50", "--densification_interval", "50",
         "--densify_until_iter", "150", "--normal_from_iter", "100", "--dist_from_iter", "100", "--opacity_lr", "0.1"]
MAIN_ITERATIONS = 200
# Measured on the laptop scene below (200 iterations, 48 px): train PSNR 24.4 / 25.3 dB (test 25.8 / 25.3), depth
# error 0.035 / 0.019; larger-motion excess 22.2 vs 2.6 (96 / 32 opaque surfels).
MIN_TRAIN_PSNR = 22.0
MAX_DEPTH_ERROR = 0.06
OPEN_STATE_INDEX = {"start": 0, "end": 1}
# Categories whose parts expose surface when they open. A window's sash slides over the other sash: opening it hides
# surface, so the larger-motion rule has no open state to find there (it names the closed one).
EXPOSING_CATEGORIES = [category for category in categories() if category != "window"]


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """One intra-op thread: on the shared 2-core CI machine more threads make the small renders much slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_scene(root: Path, category: str, name: str, res: int, views: int, open_state: str,
               test_views: int = 2) -> Path:
    """Generate `root/gear/synthetic/<name>` with sparse initial point clouds shipped in it (as a dataset may ship
    them); returns the scene folder."""
    folder = root / "gear" / "synthetic" / name
    generate_scene(category, folder, res=res, views=views, test_views=test_views, seed=0, open_state=open_state,
                   supersample=1, progress=False)
    for state, state_name in enumerate(("start", "end")):
        points, colours = voxel_downsample(*backproject_depth(load_cameras(folder, state, "train")), INIT_VOXEL)
        write_point_ply(folder / f"point_cloud_{state_name}.ply", points, colours)
    return folder


def scene_args(root: Path, name: str, model_path: Path, iterations: int) -> list[str]:
    return ["--source_path", str(root), "--scene_name", name, "--model_path", str(model_path),
            "--iterations", str(iterations)]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_scene(root, "laptop", "laptop", res=48, views=10, open_state="start")
    make_scene(root, "cabinet", "cabinet", res=32, views=6, open_state="end", test_views=1)
    return root


@pytest.fixture(scope="module")
def trained(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One short run of the laptop scene (parts open in the start state); returns its model path and summary."""
    model_path = tmp_path_factory.mktemp("out") / "laptop" / "coarse_gs"
    assert coarse.main(scene_args(data_root, "laptop", model_path, MAIN_ITERATIONS) + SHORT) == 0
    summary = json.loads((model_path / COARSE_SUMMARY_NAME).read_text())
    return {"model_path": model_path, "summary": summary}


# --------------------------------------------------------------------------------------------- larger motion state

def visible_points(folder: Path, state: int) -> np.ndarray:
    """(M, 3) back-projected depth of one state's training views: the surface a coarse model can see."""
    return backproject_depth(load_cameras(folder, state, "train"))[0].astype(np.float64)


@pytest.mark.parametrize("open_state", ["start", "end"])
def test_larger_motion_state_visible_surfaces_every_category(tmp_path: Path, open_state: str) -> None:
    """On the visible surface of every category the rule names the open state with a clear margin, also with
    5 mm noise and 10 % random floaters added to the closed state."""
    rng = np.random.default_rng(0)
    open_index = OPEN_STATE_INDEX[open_state]
    for category in EXPOSING_CATEGORIES:
        folder = tmp_path / category
        # Openings in the upper half of their range (as the generator made them before small motions became part of
        # its default): the margins below are for clearly open parts; a door opened 15 degrees exposes little.
        generate_scene(category, folder, res=32, views=8, test_views=1, seed=0, open_state=open_state,
                       supersample=1, progress=False, motion="large")
        points = [visible_points(folder, state) for state in (0, 1)]
        excess = motion_excesses(points[0], points[1], 0.01)
        assert larger_motion_state(points[0], points[1], 0.01) == open_index, (category, excess)
        assert excess[open_index] > 1.8 * excess[1 - open_index], (category, excess)
        closed = points[1 - open_index]
        floaters = rng.uniform(-0.9, 0.9, (len(closed) // 10, 3))
        points[1 - open_index] = np.concatenate([closed + rng.normal(0.0, 0.005, closed.shape), floaters])
        excess = motion_excesses(points[0], points[1], 0.01)
        assert excess[open_index] > 1.3 * excess[1 - open_index], (category, "with floaters", excess)


@pytest.mark.parametrize("open_state", ["start", "end"])
def test_larger_motion_state_mesh_samples_every_category(open_state: str) -> None:
    """Points sampled on the whole ground-truth meshes (hidden surfaces too) give the same answer."""
    for category in EXPOSING_CATEGORIES:
        spec = build_object(category, seed=1, open_state=open_state)
        faces = [part.mesh.faces for part in spec.parts]
        points = []
        for state in (0, 1):
            mesh = trimesh.util.concatenate([trimesh.Trimesh(v, f, process=False)
                                             for v, f in zip(spec.posed_vertices(state), faces)])
            points.append(trimesh.sample.sample_surface(mesh, 20_000, seed=state)[0])
        assert larger_motion_state(points[0], points[1]) == OPEN_STATE_INDEX[open_state], category


def test_larger_motion_state_function_contract() -> None:
    rng = np.random.default_rng(0)
    plate = np.stack([rng.uniform(0, 1, 4000), rng.uniform(0, 1, 4000), np.zeros(4000)], axis=1)
    flap = plate[:500] * [0.3, 0.3, 0] + [0.0, 0.0, 0.2]  # extra surface lifted off the plate
    opened = np.concatenate([plate, flap])
    assert larger_motion_state(plate, opened) == 1
    assert larger_motion_state(opened, plate) == 0
    # The capped sum counts each voxel once whatever the density, and caps far points at 30 voxels.
    assert len(voxel_centres(np.repeat(plate, 3, axis=0), 0.01)) == len(voxel_centres(plate, 0.01))
    far = np.array([[100.0, 0.0, 0.0]])
    assert motion_excesses(far, plate, 0.01)[0] == pytest.approx(0.3)
    # Isolated voxels (floaters) are dropped, a surface's voxels are kept.
    floaters = rng.uniform(-5.0, 5.0, (20, 3)) + [0.0, 0.0, 10.0]
    kept = remove_isolated(voxel_centres(np.concatenate([plate, floaters]), 0.01))
    assert len(kept) == len(voxel_centres(plate, 0.01)) and kept[:, 2].max() < 0.01
    assert motion_excesses(np.concatenate([plate, floaters]), plate)[0] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="points_0"):
        larger_motion_state(np.zeros((0, 3)), plate)
    with pytest.raises(ValueError, match="points_1"):
        larger_motion_state(plate, np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="voxel_size"):
        larger_motion_state(plate, opened, voxel_size=0.0)


# ------------------------------------------------------------------------------------------------------ short run

def test_short_run_writes_the_stage_outputs(trained: dict) -> None:
    model_path, summary = trained["model_path"], trained["summary"]
    final = model_path / "point_cloud" / f"iteration_{MAIN_ITERATIONS}"
    for state in (0, 1):
        model = GaussianModel.load_ply(final / f"point_cloud_{state}.ply")
        assert model.num_points == summary["num_gaussians"][state] > 100
        assert torch.isfinite(model.get_xyz).all()
        # Transparent surfels are pruned after densification too (none left here; 7 % and 4 % without it)
        assert (model.get_opacity < 0.005).float().mean() < 0.01
    # The laptop's lid is open in the start state: the canonical (larger-motion) state is 0.
    assert (final / "larger_motion_state.txt").read_text().strip() == "0"
    assert summary["larger_motion_state"] == 0
    assert summary["motion_excess"][0] > 1.5 * summary["motion_excess"][1]
    cfg = json.loads((model_path / "cfg_args").read_text())
    assert cfg["scene_name"] == "laptop" and cfg["iterations"] == MAIN_ITERATIONS and cfg["random_bg_color"] is True
    # Only each state's latest checkpoint is kept; it loads without unpickling code.
    names = [f"chkpnt_state{state}_{MAIN_ITERATIONS}.pth" for state in (0, 1)]
    assert sorted(p.name for p in model_path.glob("chkpnt*.pth")) == names
    for state, name in enumerate(names):
        payload = load_checkpoint(model_path / name, torch.device("cpu"))
        assert payload["iteration"] == MAIN_ITERATIONS and payload["state"] == state
        assert payload["params"]["means"].shape[0] == summary["num_gaussians"][state]
    assert summary["resumed_from"] == [None, None] and summary["iterations_per_second"] > 0
    assert summary["peak_gpu_memory_gib"] is None  # a CPU run


def test_summary_splits_the_wall_time_into_phases(trained: dict) -> None:
    """Where the stage's time goes: the phases cover the run, and the training loop's two add up to its time."""
    seconds, summary = trained["summary"]["seconds"], trained["summary"]
    assert list(seconds) == ["load", "initialisation", "iterations", "checkpoints and saves", "larger-motion test",
                             "evaluation"]
    assert all(value >= 0.0 for value in seconds.values())
    assert 0.9 * summary["wall_seconds"] <= sum(seconds.values()) <= summary["wall_seconds"]
    loop = seconds["iterations"] + seconds["checkpoints and saves"]
    assert summary["train_seconds"] <= loop <= summary["train_seconds"] + 0.5


def test_cpu_runs_repeat_to_the_bit_with_several_threads(data_root: Path, tmp_path: Path) -> None:
    """The same seed gives the same surfels on the CPU with two threads (torch's deterministic algorithms; without
    them the renderer's backward sums in a thread-dependent order and 120 iterations differ by about 1e-5)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        models = []
        for run in ("a", "b"):
            assert coarse.main(scene_args(data_root, "laptop", tmp_path / run, 120) + SHORT) == 0
            models.append(GaussianModel.load_ply(tmp_path / run / "point_cloud" / "iteration_120" / "point_cloud_0.ply"))
    finally:
        torch.set_num_threads(threads)
    first, second = models
    for name, value in first.params.items():
        assert torch.equal(value, second.params[name]), name


def test_short_run_fits_images_and_depth(trained: dict) -> None:
    summary = trained["summary"]
    for state in (0, 1):
        assert summary["train"][state]["psnr"] >= MIN_TRAIN_PSNR, summary["train"]
        assert summary["train"][state]["depth_mae"] <= MAX_DEPTH_ERROR, summary["train"]
        assert summary["test"][state]["psnr"] >= MIN_TRAIN_PSNR - 3.0, summary["test"]


def test_finished_run_is_not_retrained(trained: dict, data_root: Path, capsys: pytest.CaptureFixture) -> None:
    model_path = trained["model_path"]
    ply = model_path / "point_cloud" / f"iteration_{MAIN_ITERATIONS}" / "point_cloud_0.ply"
    stamp = ply.stat().st_mtime_ns
    start = time.perf_counter()
    assert coarse.main(scene_args(data_root, "laptop", model_path, MAIN_ITERATIONS) + SHORT) == 0
    assert time.perf_counter() - start < 5.0
    assert "done already" in capsys.readouterr().out
    assert ply.stat().st_mtime_ns == stamp


# ------------------------------------------------------------------------------------------ resume and divergence

class Interrupted(Exception):
    """Stands for a killed process in the resume test."""


def test_interrupted_run_resumes_to_the_same_result(data_root: Path, tmp_path: Path, monkeypatch) -> None:
    """A run killed after its checkpoints at 20 continues from them and ends exactly where an uninterrupted run ends,
    also when one state has lost its checkpoint (that state restarts, the other waits for it at iteration 20)."""
    args = ["--checkpoint_interval", "20", "--save_iterations", "40"] + SHORT
    reference = tmp_path / "reference"
    assert coarse.main(scene_args(data_root, "cabinet", reference, 40) + args) == 0

    resumed = tmp_path / "resumed"
    original = coarse.train_step

    def killed_at_30(runs, iteration, *rest):
        if iteration == 30:
            raise Interrupted
        return original(runs, iteration, *rest)

    monkeypatch.setattr(coarse, "train_step", killed_at_30)
    with pytest.raises(Interrupted):
        coarse.main(scene_args(data_root, "cabinet", resumed, 40) + args)
    assert sorted(p.name for p in resumed.glob("chkpnt*.pth")) == ["chkpnt_state0_20.pth", "chkpnt_state1_20.pth"]
    (resumed / "chkpnt_state1_20.pth").unlink()
    monkeypatch.setattr(coarse, "train_step", original)
    assert coarse.main(scene_args(data_root, "cabinet", resumed, 40) + args) == 0
    assert json.loads((resumed / COARSE_SUMMARY_NAME).read_text())["resumed_from"] == [20, None]
    for state in (0, 1):
        a = GaussianModel.load_ply(reference / "point_cloud" / "iteration_40" / f"point_cloud_{state}.ply")
        b = GaussianModel.load_ply(resumed / "point_cloud" / "iteration_40" / f"point_cloud_{state}.ply")
        assert a.num_points == b.num_points
        for name in ("means", "scales", "opacities", "sh0"):
            torch.testing.assert_close(a.params[name], b.params[name], rtol=0, atol=1e-6)

    # A longer --iterations continues from the finished run's checkpoint; --overwrite starts afresh.
    assert coarse.main(scene_args(data_root, "cabinet", resumed, 50) + args) == 0
    assert json.loads((resumed / COARSE_SUMMARY_NAME).read_text())["resumed_from"] == [40, 40]
    assert coarse.main(scene_args(data_root, "cabinet", resumed, 20) + args + ["--overwrite"]) == 0
    assert not (resumed / "point_cloud" / "iteration_40").exists()
    assert json.loads((resumed / COARSE_SUMMARY_NAME).read_text())["resumed_from"] == [None, None]


def test_run_stopped_during_its_final_save_finishes_it(tiny_scene: Path) -> None:
    """Both states' final checkpoints exist but the final outputs do not (stopped while saving): the rerun trains no
    iteration and writes them."""
    model_path = tiny_scene.parent / "out"
    args = scene_args(tiny_scene.parents[2], "tiny", model_path, 10) + ["--data_device", "cpu"]
    assert coarse.main(args) == 0
    (model_path / COARSE_SUMMARY_NAME).unlink()
    (model_path / "point_cloud" / "iteration_10" / LARGER_MOTION_NAME).unlink()
    assert coarse.main(args) == 0
    summary = json.loads((model_path / COARSE_SUMMARY_NAME).read_text())
    assert summary["resumed_from"] == [10, 10] and summary["iterations_per_second"] is None
    assert (model_path / "point_cloud" / "iteration_10" / LARGER_MOTION_NAME).is_file()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data_root: Path, tmp_path: Path, monkeypatch,
                                                           capsys: pytest.CaptureFixture) -> None:
    original = coarse.state_losses

    def nan_from_25(runs, batch, cameras, bgs, args, iteration, image_loss):
        losses = original(runs, batch, cameras, bgs, args, iteration, image_loss)
        return losses * float("nan") if iteration >= 25 else losses

    monkeypatch.setattr(coarse, "state_losses", nan_from_25)
    model_path = tmp_path / "nan"
    code = coarse.main(scene_args(data_root, "cabinet", model_path, 60) + ["--checkpoint_interval", "20"] + SHORT)
    assert code == 3
    err = capsys.readouterr().err
    kept = ["chkpnt_state0_20.pth", "chkpnt_state1_20.pth"]
    assert "diverged" in err and all(name in err for name in kept)
    assert sorted(p.name for p in model_path.glob("chkpnt*.pth")) == kept
    for name in kept:
        payload = load_checkpoint(model_path / name, torch.device("cpu"))
        assert all(torch.isfinite(p).all() for p in payload["params"].values())
    assert not (model_path / "point_cloud" / "iteration_60").exists()


# ---------------------------------------------------------------------------------------------------- bad input

@pytest.fixture()
def tiny_scene(tmp_path: Path) -> Path:
    """A 24 px, 2-view scene (fails before any training in the error tests)."""
    return make_scene(tmp_path / "data", "cabinet", "tiny", res=24, views=2, open_state="end", test_views=1)


def data_files(folder: Path) -> dict[str, int]:
    """Every file under `folder` with its modification time: to show that a stage wrote nothing there."""
    return {str(path): path.stat().st_mtime_ns for path in sorted(folder.rglob("*"))}


def run_failing(tiny_scene: Path, capsys: pytest.CaptureFixture, source: Path | None = None) -> str:
    """Run the stage on the tiny scene; assert a non-zero exit; return stderr."""
    root = source or tiny_scene.parents[2]
    code = coarse.main(scene_args(root, "tiny", tiny_scene.parent / "out", 10) + ["--data_device", "cpu"])
    assert code != 0
    return capsys.readouterr().err


def test_missing_data_folder(tiny_scene: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    err = run_failing(tiny_scene, capsys, source=tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / "gear" / "synthetic" / "tiny") in err and "does not exist" in err


def test_empty_point_cloud(tiny_scene: Path, capsys: pytest.CaptureFixture) -> None:
    path = tiny_scene / "point_cloud_end.ply"
    write_point_ply(path, np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32))
    err = run_failing(tiny_scene, capsys)
    assert str(path) in err and "empty" in err


def test_mismatched_image_sizes(tiny_scene: Path, capsys: pytest.CaptureFixture) -> None:
    path = tiny_scene / "end" / "train" / "rgba" / "0001.png"
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(path), cv2.resize(image, (30, 30)))
    err = run_failing(tiny_scene, capsys)
    assert str(path) in err and "size" in err


# ---------------------------------------------------------------------------------------------- arguments, script

def test_default_model_path_and_options() -> None:
    args = coarse.parse_args(["--scene_name", "fridge", "--output_root", "runs", "--dataset", "paris",
                              "--subset", "sapien"])
    assert Path(args.model_path) == Path("runs/paris/sapien/fridge/coarse_gs")
    assert args.random_bg_color is True and args.save_iterations == (7000, 30_000) and args.iterations == 30_000
    assert Path(coarse.parse_args(["--scene_name", "x", "--coarse_name", "c2"]).model_path) == Path("outputs/gear/"
                                                                                                     "synthetic/x/c2")
    assert coarse.parse_args(["--scene_name", "x", "--no-random_bg_color"]).random_bg_color is False
    with pytest.raises(SystemExit):
        coarse.parse_args([])


def test_script_passes_its_settings_and_extra_arguments() -> None:
    env = {**os.environ, "PYTHON": "echo", "SCENES": "a b", "DATASET": "paris", "SUBSET": "sapien",
           "ITERATIONS": "1234", "RESOLUTION": "400", "OUTPUT_ROOT": "runs"}
    result = subprocess.run(["bash", str(REPO / "scripts" / "2_coarse.sh"), "--overwrite"], env=env,
                            capture_output=True, text=True, check=True)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    for scene, line in zip("ab", lines):
        words = line.split()
        assert words[0] == "coarse.py" and words[-1] == "--overwrite"
        pairs = dict(zip(words[1::2], words[2::2]))
        assert pairs["--scene_name"] == scene and pairs["--iterations"] == "1234"
        assert pairs["--resolution"] == "400" and pairs["--dataset"] == "paris" and pairs["--subset"] == "sapien"
        assert pairs["--coarse_name"] == "coarse_gs" and pairs["--output_root"] == "runs"


def test_scene_without_depth_trains_without_the_depth_term(tiny_scene: Path) -> None:
    """No depth maps and no point clouds: the visual-hull initialisation is used and the depth loss is off."""
    for state in ("start", "end"):
        shutil.rmtree(tiny_scene / state / "train" / "depth")
        shutil.rmtree(tiny_scene / state / "test" / "depth")
        (tiny_scene / f"point_cloud_{state}.ply").unlink()
    before = data_files(tiny_scene)
    model_path = tiny_scene.parent / "out"
    assert coarse.main(scene_args(tiny_scene.parents[2], "tiny", model_path, 10) + ["--data_device", "cpu"]) == 0
    summary = json.loads((model_path / COARSE_SUMMARY_NAME).read_text())
    assert all(result["depth_mae"] is None for result in summary["train"] + summary["test"])
    assert initial_point_cloud_path(model_path, 0).is_file() and summary["num_gaussians"][0] > 100
    assert data_files(tiny_scene) == before  # the derived point clouds went to the model folder


def test_random_initialisation_starts_from_the_requested_points(tiny_scene: Path) -> None:
    """--no-init_from_pcd: each state starts from --random_init_points random surfels (no densification in 10
    iterations), not from its point cloud."""
    model_path = tiny_scene.parent / "out"
    args = ["--data_device", "cpu", "--no-init_from_pcd", "--random_init_points", "300"]
    assert coarse.main(scene_args(tiny_scene.parents[2], "tiny", model_path, 10) + args) == 0
    summary = json.loads((model_path / COARSE_SUMMARY_NAME).read_text())
    assert summary["num_gaussians"] == [300, 300]
    assert len(read_point_ply(initial_point_cloud_path(model_path, 1))[0]) == 300  # what the state started from
    assert coarse.parse_args(["--scene_name", "x"]).init_from_pcd is True
    with pytest.raises(SystemExit):
        coarse.parse_args(["--scene_name", "x", "--no-init_from_pcd", "--random_init_points", "1"])


def test_unreadable_checkpoint(tiny_scene: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoint = tiny_scene.parent / "out" / "chkpnt_state0_5.pth"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"not a checkpoint")
    err = run_failing(tiny_scene, capsys)
    assert str(checkpoint) in err and "--overwrite" in err


# ------------------------------------------------------------------------------------ overwrite and bad input

def test_overwrite_deletes_only_this_stages_files(tiny_scene: Path) -> None:
    """--overwrite in a model folder that also holds a user's files: the stage's outputs are made again, the
    user's files (top level and inside an iteration folder) stay."""
    model_path = tiny_scene.parent / "out"
    args = scene_args(tiny_scene.parents[2], "tiny", model_path, 10) + ["--data_device", "cpu"]
    assert coarse.main(args) == 0
    assert json.loads((model_path / STAGE_MARKER).read_text()) == {"stage": "coarse"}
    (model_path / "notes.txt").write_text("keep me")
    (model_path / "point_cloud" / "iteration_10" / "my_analysis.csv").write_text("1,2")
    stale = model_path / "chkpnt_state1_7.pth"
    stale.write_bytes(b"an older checkpoint")
    assert coarse.main(args + ["--overwrite"]) == 0
    assert (model_path / "notes.txt").read_text() == "keep me"
    assert (model_path / "point_cloud" / "iteration_10" / "my_analysis.csv").read_text() == "1,2"
    assert not stale.exists() and (model_path / "chkpnt_state1_10.pth").is_file()
    assert json.loads((model_path / COARSE_SUMMARY_NAME).read_text())["resumed_from"] == [None, None]


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_a_folder_that_is_not_a_stage2_model_folder_is_refused(tiny_scene: Path, tmp_path: Path, monkeypatch,
                                                               capsys: pytest.CaptureFixture,
                                                               overwrite: list[str]) -> None:
    """`--model_path .` (or any folder with other files and no stage-2 outputs) is refused before anything is
    written or deleted, also with --overwrite; so is stage 4's model folder."""
    work = tmp_path / "work"
    (work / "src").mkdir(parents=True)
    (work / "README.md").write_text("unrelated")
    (work / "src" / "code.py").write_text("print()")
    before = data_files(work)
    monkeypatch.chdir(work)
    root = str(tiny_scene.parents[2])
    code = coarse.main(["--source_path", root, "--scene_name", "tiny", "--model_path", ".", "--iterations", "10",
                        "--data_device", "cpu", *overwrite])
    assert code == 2 and "is not a model folder of stage 2" in capsys.readouterr().err
    assert data_files(work) == before
    stage4 = tmp_path / "gear"
    stage4.mkdir()
    (stage4 / STAGE_MARKER).write_text('{"stage": "train"}')
    code = coarse.main(["--source_path", root, "--scene_name", "tiny", "--model_path", str(stage4), "--iterations",
                        "10", "--data_device", "cpu", *overwrite])
    assert code == 2 and "model folder of stage 4" in capsys.readouterr().err


def test_bad_input_with_overwrite_keeps_the_old_outputs_and_writes_no_data(tiny_scene: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    """A NaN in a training pose is an error naming the file and frame, found before --overwrite deletes anything;
    nothing is written into the data folder, and once the JSON is fixed the stage runs."""
    model_path = tiny_scene.parent / "out"
    args = scene_args(tiny_scene.parents[2], "tiny", model_path, 10) + ["--data_device", "cpu"]
    for state in ("start", "end"):
        (tiny_scene / f"point_cloud_{state}.ply").unlink()  # derived by the stage, into the model folder
    assert coarse.main(args) == 0
    kept = data_files(model_path)
    transforms = tiny_scene / "transforms_train_end.json"
    good = transforms.read_text()
    meta = json.loads(good)
    meta["frames"][1]["transform_matrix"][2][3] = float("nan")
    transforms.write_text(json.dumps(meta))
    data = data_files(tiny_scene)
    assert coarse.main(args + ["--overwrite"]) == 2
    err = capsys.readouterr().err
    assert f"{transforms}: frame 1 'transform_matrix' holds NaN" in err
    assert data_files(model_path) == kept and data_files(tiny_scene) == data
    transforms.write_text(good)
    assert coarse.main(args + ["--overwrite"]) == 0


def test_rgb_images_without_alpha_are_refused(tiny_scene: Path, capsys: pytest.CaptureFixture) -> None:
    image = tiny_scene / "start" / "train" / "rgba" / "0001.png"
    cv2.imwrite(str(image), cv2.imread(str(image), cv2.IMREAD_UNCHANGED)[..., :3])
    err = run_failing(tiny_scene, capsys)
    assert "transforms_train_start.json: frame 1" in err and "0001.png has no alpha channel" in err
    assert "--white_background" in err


def test_abbreviated_options_and_tiny_resolutions_are_refused() -> None:
    for argv in (["--scene_name", "x", "--iter", "10"], ["--scene_name", "x", "--resolution", "3"],
                 ["--scene_name", "x", "--resolution", "0"]):
        with pytest.raises(SystemExit):
            coarse.parse_args(argv)
    assert coarse.parse_args(["--scene_name", "x", "--resolution", "400"]).resolution == 400


def test_stage2_imports_stay_light():
    """Stage 2 needs neither SciPy's image and graph modules nor torch._dynamo at import (each costs up to seconds
    on a machine without bytecode caches, as the GPU machine is)."""
    code = "import sys, coarse; print(sorted(m for m in ('scipy.ndimage', 'scipy.sparse.csgraph', 'torch._dynamo') " \
           "if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
