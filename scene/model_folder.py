"""Which stage owns an output folder, and `--overwrite` that deletes only that stage's own files.

A stage-2 or stage-4 model folder carries a marker (`scene.contract.STAGE_MARKER`) naming its stage. A stage writes
only into a folder that is new, empty, marked for it, or (made before markers existed) already holds its outputs;
any other folder, e.g. a mistyped `--model_path .`, is refused before anything is written or deleted. `--overwrite`
deletes the stage's own files (`scene.contract.stage_outputs`) and nothing else, and only once the stage has checked
its inputs.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from scene.contract import CONFIG_NAME, POINT_CLOUD_DIR, STAGE_MARKER, stage_outputs
from utils.io_utils import read_json, write_json

STAGE_TITLES = {"coarse": "stage 2 (coarse.py)", "train": "stage 4 (train.py)"}


class FolderError(ValueError):
    """An output folder belongs to something else than the stage that was asked to write into it."""


def folder_stage(model_path: str | Path) -> str | None:
    """The stage named by the folder's marker, or None when it has none."""
    marker = Path(model_path) / STAGE_MARKER
    if not marker.is_file():
        return None
    data = read_json(marker, "stage marker")
    stage = data.get("stage") if isinstance(data, dict) else None
    if not isinstance(stage, str):
        raise FolderError(f"{marker} does not name a stage; it is not a GEAR model folder's marker")
    return stage


def check_folder(model_path: str | Path, stage: str) -> None:
    """Refuse `model_path` unless it is new, empty, marked for `stage`, or an unmarked folder that already holds
    `stage`'s outputs (a model folder made before markers existed). Writes nothing."""
    folder = Path(model_path)
    if folder.exists() and not folder.is_dir():
        raise FolderError(f"--model_path {folder} is a file, not a folder")
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    owner = folder_stage(folder)
    title = STAGE_TITLES.get(stage, stage)
    if owner == stage:
        return
    if owner is not None:
        raise FolderError(f"--model_path {folder} is the model folder of {STAGE_TITLES.get(owner, owner)}, not of "
                          f"{title}; give {title} its own folder")
    evidence = [path for path in stage_outputs(folder, stage) if path.name not in (STAGE_MARKER, CONFIG_NAME)]
    if not evidence:
        raise FolderError(f"--model_path {folder} is not empty and is not a model folder of {title} (no "
                          f"{STAGE_MARKER}, none of its outputs); refusing to write or delete anything there. Give a "
                          "new or empty folder, or leave --model_path out for the default")


def claim_folder(model_path: str | Path, stage: str) -> None:
    """`check_folder`, then create the folder and mark it as `stage`'s."""
    check_folder(model_path, stage)
    folder = Path(model_path)
    if folder_stage(folder) != stage:
        write_json(folder / STAGE_MARKER, {"stage": stage})


def clear_outputs(model_path: str | Path, stage: str) -> list[Path]:
    """Delete `stage`'s own files and folders in `model_path` (its marker stays), then the iteration folders this
    left empty; other files stay. Returns what was deleted. Call only after `check_folder` and the input checks."""
    check_folder(model_path, stage)
    removed = [path for path in stage_outputs(model_path, stage) if path.name != STAGE_MARKER]
    for path in removed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    iterations = Path(model_path) / POINT_CLOUD_DIR
    if iterations.is_dir():
        for folder in iterations.iterdir():
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        if not any(iterations.iterdir()):
            iterations.rmdir()
    return removed
