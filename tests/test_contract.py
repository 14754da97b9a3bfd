"""The on-disk contract (scene/contract.py), the one config convention of the entry points, the import rules of the
packages, and docs/ARCHITECTURE.md's copy of the file layout."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import coarse
import render
import train
import voxelize
from scene import contract
from utils import get_mask

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = {"stage 1": get_mask.parse_args, "stage 2": coarse.parse_args, "stage 3": voxelize.parse_args,
                "stage 4": train.parse_args, "stage 5": render.parse_args}
NOT_LOW_LEVEL = {"get_mask"}  # an entry point (stage 1), not a helper
ABOVE_UTILS = {"scene", "arguments", "training", "segmentation", "gaussian_renderer", "parts", "evaluation",
               "coarse", "train", "render", "voxelize", "data_tools", "benchmarks"}


def test_the_architecture_document_shows_the_contracts_layout() -> None:
    layout = re.search(r"\n(    <source_path>.*?)\n\n", contract.__doc__, re.S).group(1)
    assert layout in (ROOT / "docs" / "ARCHITECTURE.md").read_text()


def test_stage_outputs_list_only_the_stages_own_files(tmp_path: Path) -> None:
    coarse_dir, model_dir = tmp_path / "coarse_gs", tmp_path / "gear"
    owned_coarse = ["stage.json", "cfg_args", "coarse_summary.json", "chkpnt_state0_500.pth", "init",
                    "point_cloud/iteration_500/point_cloud_1.ply", "point_cloud/iteration_500/surface_points_0.ply",
                    "point_cloud/iteration_500/larger_motion_state.txt",
                    "point_cloud/iteration_500/joint_voxel_info.npz"]
    owned_model = ["stage.json", "cfg_args", "train_summary.json", "train_log.jsonl", "chkpnt20.pth", "eval",
                   "point_cloud/iteration_20/point_cloud.ply", "point_cloud/iteration_20/articulation.json"]
    foreign = ["notes.txt", "chkpnt_best.pth", "point_cloud/iteration_500/mine.ply", "point_cloud/keep/x.ply"]
    for folder, owned in ((coarse_dir, owned_coarse), (model_dir, owned_model)):
        for name in owned + foreign:
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.mkdir() if name in ("init", "eval") else path.write_text("x")
    assert contract.stage_outputs(coarse_dir, contract.COARSE_STAGE) == sorted(coarse_dir / n for n in owned_coarse)
    assert contract.stage_outputs(model_dir, contract.TRAIN_STAGE) == sorted(model_dir / n for n in owned_model)
    assert "chkpnt20.pth" not in {p.name for p in contract.stage_outputs(model_dir, contract.COARSE_STAGE)}
    assert contract.stage_outputs(tmp_path / "absent", contract.TRAIN_STAGE) == []


def test_stage3_names_and_paths() -> None:
    assert contract.STAGE3_OUTPUTS == ("joint_voxel_info.json", "joint_voxel_info.npz")
    scene_out = contract.scene_output_dir("out", "gear", "synthetic", "cabinet")
    assert contract.coarse_iteration_dir(scene_out, "coarse_gs", 30000) == \
        Path("out/gear/synthetic/cabinet/coarse_gs/point_cloud/iteration_30000")
    assert contract.mask_path(contract.masks_dir(scene_out), 1, "train", "0007") == \
        Path("out/gear/synthetic/cabinet/masks/end/train/0007.npy")
    assert contract.initial_point_cloud_path(scene_out / "coarse_gs", 0) == \
        Path("out/gear/synthetic/cabinet/coarse_gs/init/point_cloud_0.ply")


@pytest.mark.parametrize("stage", sorted(ENTRY_POINTS))
def test_every_entry_point_takes_the_same_scene_flags(stage: str) -> None:
    parse = ENTRY_POINTS[stage]
    extra = ["--segmenter", "classic"] if stage == "stage 1" else []
    config = parse(["--source_path", "d", "--dataset", "paris", "--subset", "sapien", "--scene_name", "oven",
                    "--output_root", "o", "--white_background", *extra])
    assert config.scene_dir == Path("d/paris/sapien/oven") and config.output_dir == Path("o/paris/sapien/oven")
    assert config.white_background
    assert parse(["--data_root", "d", "--scene_name", "oven", *extra]).source_path == "d"  # the older spelling
    for argv in (["--scene_name", "oven", "--output", "o"], ["--scene_name", "oven", "--source", "d"], []):
        with pytest.raises(SystemExit):  # abbreviations are refused, the scene is required
            parse([*argv, *extra])


def test_model_folders_and_the_stage2_iteration_have_one_flag_each() -> None:
    refine = train.parse_args(["--scene_name", "s", "--coarse_name", "c", "--coarse_iter", "7", "--model_name", "m"])
    assert Path(refine.model_path) == Path("outputs/gear/synthetic/s/m")
    assert train.coarse_folder(refine) == Path("outputs/gear/synthetic/s/c/point_cloud/iteration_7")
    assert Path(render.parse_args(["--scene_name", "s", "--model_name", "m"]).model_path) == \
        Path("outputs/gear/synthetic/s/m")
    assert Path(coarse.parse_args(["--scene_name", "s", "--coarse_name", "c"]).model_path) == \
        Path("outputs/gear/synthetic/s/c")


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
    return names


def test_utils_imports_nothing_above_it() -> None:
    for path in sorted((ROOT / "utils").glob("*.py")):
        if path.stem not in NOT_LOW_LEVEL:
            assert not _imported_packages(path) & ABOVE_UTILS, path.name


def test_segmentation_and_training_do_not_import_entry_points() -> None:
    for package in ("segmentation", "training", "scene", "arguments"):
        for path in sorted((ROOT / package).glob("*.py")):
            assert not _imported_packages(path) & {"coarse", "train", "render", "voxelize"}, path
