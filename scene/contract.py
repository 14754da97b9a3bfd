"""The on-disk contract between the stages: every folder and file name that one stage writes and another reads.

The data folder is input only; no stage ever writes into it. Everything a stage makes goes under the scene's output
folder:

    <source_path>/<dataset>/<subset>/<scene>/            INPUT (read only)
        transforms_{train,test}_{start,end}.json         cameras and frame images (scene/dataset_readers.py)
        point_cloud_{start,end}.ply                      optional: an initial point cloud the dataset ships
        gt/                                              ground truth: read by the metrics only
    <output_root>/<dataset>/<subset>/<scene>/            scene_output_dir
        masks/<state>/<split>/<image>.npy                stage 1: int32 label map of one image (0 = no region)
        masks_vis/<state>_<image>.png                    stage 1: overlays (--save_visualization)
        <coarse_name>/                                   stage 2 model folder (default coarse_gs)
            stage.json                                   which stage owns the folder (STAGE_MARKER)
            cfg_args                                     the run's settings (JSON)
            coarse_summary.json                          PSNR, depth error, counts, timings
            chkpnt_state<s>_<N>.pth                      each state's latest resume checkpoint
            init/point_cloud_<s>.ply                     the initial point cloud a state started from when the
                                                         dataset ships none (back-projected depth or visual hull)
            point_cloud/iteration_<N>/                   iteration folder (iteration_dir), read by stages 3 and 4
                point_cloud_<s>.ply                      state s's surfels
                surface_points_<s>.ply                   state s's rendered surface (stage 3's input)
                larger_motion_state.txt                  0 or 1: the canonical state (written last)
                joint_voxel_info.json, .npz              stage 3: parts, voxels and initial joints
                voxel_parts_{canonical,other}.ply        stage 3: inspection clouds (--save_ply)
        <model_name>/                                    stage 4 model folder (default gear)
            stage.json, cfg_args
            chkpnt<N>.pth                                resume checkpoint of iteration N
            train_log.jsonl, train_summary.json
            point_cloud/iteration_<N>/point_cloud.ply    canonical surfels with part logits
            point_cloud/iteration_<N>/articulation.json  part motions (scene/trained_model.py)
            eval/                                        stage 5: one run's renders, meshes, exports, metrics

<s> is 0 (start) or 1 (end); <state> is the state's name. A folder is a stage's model folder when its STAGE_MARKER
names that stage; `--overwrite` deletes only the names listed here for that stage (`stage_outputs`).
"""
from __future__ import annotations

import re
from pathlib import Path

STATES = ("start", "end")  # state 0 and state 1, as named in the data folder and in the outputs

# -------------------------------------------------------------------------------------------------- input (data)
SHIPPED_POINT_CLOUD = "point_cloud_{state}.ply"  # <state> name: an initial point cloud shipped with the dataset


def scene_dir(source_path: str | Path, dataset: str, subset: str, scene: str) -> Path:
    """`<source_path>/<dataset>/<subset>/<scene>`: the scene's input folder."""
    return Path(source_path) / dataset / subset / scene


def shipped_point_cloud_path(scene_folder: str | Path, state: int) -> Path:
    """`<scene>/point_cloud_<state name>.ply`: where a dataset may ship an initial point cloud (input only)."""
    return Path(scene_folder) / SHIPPED_POINT_CLOUD.format(state=STATES[state])


# ------------------------------------------------------------------------------------------------------- outputs
def scene_output_dir(output_root: str | Path, dataset: str, subset: str, scene: str) -> Path:
    """`<output_root>/<dataset>/<subset>/<scene>`: where every stage writes for this scene."""
    return Path(output_root) / dataset / subset / scene


STAGE_MARKER = "stage.json"  # {"stage": <stage name>} in a model folder: which stage owns it
CONFIG_NAME = "cfg_args"  # JSON of a stage's settings, in its model folder
POINT_CLOUD_DIR = "point_cloud"


def iteration_dir(model_path: str | Path, iteration: int) -> Path:
    """`<model_path>/point_cloud/iteration_<iteration>`: where stages 2 and 4 save a model of one iteration."""
    return Path(model_path) / POINT_CLOUD_DIR / f"iteration_{int(iteration)}"


ITERATION_PATTERN = re.compile(r"iteration_(\d+)")

# --- stage 1: label maps
MASKS_DIR = "masks"
MASKS_VIS_DIR = "masks_vis"


def masks_dir(scene_out: str | Path) -> Path:
    """`<scene output>/masks`: stage 1's label maps of every state and split."""
    return Path(scene_out) / MASKS_DIR


def mask_path(masks_root: str | Path, state: int, split: str, image_name: str) -> Path:
    """`<masks>/<state>/<split>/<image>.npy`: the label map of one image (its name without extension)."""
    return Path(masks_root) / STATES[state] / split / f"{image_name}.npy"


def mask_overlay_path(scene_out: str | Path, state: int, image_name: str) -> Path:
    """`<scene output>/masks_vis/<state>_<image>.png`: stage 1's overlay of one image."""
    return Path(scene_out) / MASKS_VIS_DIR / f"{STATES[state]}_{image_name}.png"


# --- stage 2: the coarse models
COARSE_NAME = "coarse_gs"  # default stage-2 model folder inside the scene output folder
COARSE_STAGE = "coarse"
COARSE_SUMMARY_NAME = "coarse_summary.json"
LARGER_MOTION_NAME = "larger_motion_state.txt"
INIT_DIR = "init"


def coarse_ply_name(state: int) -> str:
    """`point_cloud_<s>.ply`: state s's surfels in a stage-2 iteration folder."""
    return f"point_cloud_{int(state)}.ply"


def surface_points_name(state: int) -> str:
    """`surface_points_<s>.ply`: state s's rendered surface in a stage-2 iteration folder."""
    return f"surface_points_{int(state)}.ply"


def coarse_checkpoint_prefix(state: int) -> str:
    """`chkpnt_state<s>_`: the prefix of state s's stage-2 checkpoints (+ iteration + `.pth`)."""
    return f"chkpnt_state{int(state)}_"


def initial_point_cloud_path(model_path: str | Path, state: int) -> Path:
    """`<stage-2 model>/init/point_cloud_<s>.ply`: the derived point cloud state s started from."""
    return Path(model_path) / INIT_DIR / f"point_cloud_{int(state)}.ply"


def coarse_iteration_dir(scene_out: str | Path, coarse_name: str, iteration: int) -> Path:
    """The stage-2 iteration folder that stages 3 and 4 read (and stage 3 writes into)."""
    return iteration_dir(Path(scene_out) / coarse_name, iteration)


# --- stage 3: parts and initial joints (written into the stage-2 iteration folder)
JOINT_VOXEL_INFO_JSON = "joint_voxel_info.json"
JOINT_VOXEL_INFO_NPZ = "joint_voxel_info.npz"
STAGE3_OUTPUTS = (JOINT_VOXEL_INFO_JSON, JOINT_VOXEL_INFO_NPZ)
STAGE3_INSPECTION = ("voxel_parts_canonical.ply", "voxel_parts_other.ply")

# --- stage 4: the refined model
MODEL_NAME = "gear"  # default stage-4 model folder inside the scene output folder
TRAIN_STAGE = "train"
TRAIN_SUMMARY_NAME = "train_summary.json"
TRAIN_LOG_NAME = "train_log.jsonl"
TRAIN_CHECKPOINT_PREFIX = "chkpnt"
MODEL_PLY_NAME = "point_cloud.ply"
ARTICULATION_NAME = "articulation.json"


def train_checkpoint_path(model_path: str | Path, iteration: int) -> Path:
    """`<stage-4 model>/chkpnt<N>.pth`."""
    return Path(model_path) / f"{TRAIN_CHECKPOINT_PREFIX}{int(iteration)}.pth"


# --- stage 5: evaluation and exports
EVAL_DIR = "eval"
EVAL_NEW_DIR = ".eval.new"  # stage 5 writes here and swaps it in as eval/ at the end
EVAL_OLD_DIR = ".eval.old"  # the previous eval/ while the new one is swapped in
EVAL_OUTPUTS = ("renders", "parts", "depth", "normal", "meshes", "urdf", "orbit.gif", "joint_info.json",
                "metrics.json", "result.csv")


def eval_dir(model_path: str | Path) -> Path:
    """`<stage-4 model>/eval`: stage 5's outputs."""
    return Path(model_path) / EVAL_DIR


# ------------------------------------------------------------------------------------- what each stage owns
_NUMBER = r"\d+"
_STAGE_FILES = {
    # stage -> (file-name patterns at the model folder's top level, patterns inside its iteration folders,
    #           sub-folders wholly its own)
    COARSE_STAGE: (
        (re.escape(STAGE_MARKER), re.escape(CONFIG_NAME), re.escape(COARSE_SUMMARY_NAME),
         rf"chkpnt_state[01]_{_NUMBER}\.pth"),
        (r"point_cloud_[01]\.ply", r"surface_points_[01]\.ply", re.escape(LARGER_MOTION_NAME),
         *(re.escape(name) for name in STAGE3_OUTPUTS + STAGE3_INSPECTION)),
        (INIT_DIR,),
    ),
    TRAIN_STAGE: (
        (re.escape(STAGE_MARKER), re.escape(CONFIG_NAME), re.escape(TRAIN_SUMMARY_NAME), re.escape(TRAIN_LOG_NAME),
         rf"{TRAIN_CHECKPOINT_PREFIX}{_NUMBER}\.pth"),
        (re.escape(MODEL_PLY_NAME), re.escape(ARTICULATION_NAME)),
        (EVAL_DIR, EVAL_NEW_DIR, EVAL_OLD_DIR),
    ),
}


def stage_names() -> tuple[str, ...]:
    """The stages that own a model folder."""
    return tuple(_STAGE_FILES)


def stage_outputs(model_path: str | Path, stage: str) -> list[Path]:
    """The files and folders in `model_path` that `stage` writes (stage 3's files inside stage 2's iteration
    folders count as stage 2's: they are derived from them); nothing else in the folder is listed."""
    top, inner, folders = _STAGE_FILES[stage]
    root = Path(model_path)
    if not root.is_dir():
        return []
    found = [path for path in root.iterdir() if path.is_file() and _matches(path.name, top)]
    found += [root / name for name in folders if (root / name).exists()]
    iterations = root / POINT_CLOUD_DIR
    for folder in sorted(iterations.iterdir()) if iterations.is_dir() else []:
        if folder.is_dir() and ITERATION_PATTERN.fullmatch(folder.name):
            found += [path for path in folder.iterdir() if path.is_file() and _matches(path.name, inner)]
    return sorted(found)


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(re.fullmatch(pattern, name) for pattern in patterns)
