"""Stage 1: per-image 2D part priors (label maps) of every training image.

For every training image of the chosen states, segment the image (Segment Anything's automatic masks, or a classical
over-segmentation when asked with `--segmenter classic`; `segmentation/`), keep the regions on the object and save
them as an int32 label map `<output_root>/<dataset>/<subset>/<scene>/masks/<state>/train/<image>.npy` (0 = no region;
`scene/contract.py`). Images already done are skipped unless `--overwrite`. Run from the repository root:

    python utils/get_mask.py --dataset gear --subset synthetic --scene_name cabinet \
        [--sam_checkpoint submodules/sam_vit_h_4b8939.pth]

(`--dataset_path gear/synthetic/cabinet` and `--data_root` are the older spellings of the scene and `--source_path`.)
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import NamedTuple

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np
import torch
from tqdm import tqdm

from arguments import SceneOptions, add_options, build, new_parser, option
from scene.contract import STATES, mask_overlay_path, mask_path, masks_dir
from scene.dataset_readers import (
    DatasetError, companion_path, frame_paths, read_depth_png, read_mask, read_rgba, read_transforms, transforms_path,
)
from segmentation.label_maps import label_map, overlay
from segmentation.segmenters import (
    FOREGROUND_ALPHA, SAM_CHECKPOINT, SAM_SETTINGS, CheckpointError, ClassicSegmenter, Frame, Segmenter,
)
from utils.graphics_utils import fov_to_focal
from utils.io_utils import atomic_path

MAX_WORKERS = 8


class ImageJob(NamedTuple):
    """One training image to segment: its state (0 or 1), rgba path, mask path and the field of view of its
    transforms."""

    state: int
    image: Path
    mask: Path
    fov_x: float
    fov_y: float | None


@dataclass(frozen=True)
class MaskConfig(SceneOptions):
    """Stage 1: which segmenter, on which device, for which states."""

    segmenter: str = option("sam", "sam (default) or classic: a classical over-segmentation, a weaker prior",
                            choices=("sam", "classic"))
    sam_checkpoint: str = option(str(SAM_CHECKPOINT), "the SAM weights")
    model_type: str = option("vit_h", "segment_anything.sam_model_registry key matching --sam_checkpoint (vit_h, "
                                      "vit_l, vit_b)")
    device: str | None = option(None, "SAM's device (default: cuda when available)", type=str,
                                choices=("cuda", "cpu"))
    workers: int | None = option(None, f"processes for the classic segmenter (default: the available cores, at "
                                       f"most {MAX_WORKERS}); SAM segments one image at a time on --device", type=int)
    points_per_side: int = option(SAM_SETTINGS["points_per_side"], "SAM prompt grid (the paper: 32); lower only "
                                                                   "for quick tests")
    points_per_batch: int = option(64, "SAM prompts per forward pass (memory)")
    states: tuple[str, ...] = option(STATES, "the joint states whose training images are segmented",
                                     choices=STATES)
    save_visualization: bool = option(False, "write overlay PNGs of the label maps to <scene output>/masks_vis")
    overwrite: bool = option(False, "redo images whose mask already exists")

    @property
    def output_masks(self) -> Path:
        """Stage 1's `masks/` folder of the scene."""
        return masks_dir(self.output_dir)


def parse_args(argv: list[str] | None) -> MaskConfig:
    """The stage-1 settings, with the device and worker count resolved."""
    parser = new_parser("Stage 1: part priors (label maps) for every training image.")
    add_options(parser, MaskConfig)
    parser.add_argument("--dataset_path", default="",
                        help="older spelling of the scene: <dataset>/<subset>/<scene>, relative to --source_path")
    args = parser.parse_args(argv)
    if args.dataset_path:
        parts = Path(args.dataset_path).parts
        if Path(args.dataset_path).is_absolute() or len(parts) != 3:
            parser.error(f"--dataset_path must be <dataset>/<subset>/<scene> relative to --source_path, "
                         f"got {args.dataset_path}")
        if args.scene_name:
            parser.error("give the scene either as --dataset_path or as --dataset/--subset/--scene_name, not both")
        args.dataset, args.subset, args.scene_name = parts
    if not args.scene_name:
        parser.error("--scene_name (or --dataset_path) is required")
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    if args.segmenter == "sam":
        if args.workers not in (None, 1):
            parser.error("--workers applies to --segmenter classic; SAM segments one image at a time on --device")
        args.workers = 1
        if args.device is None:
            args.device = "cuda" if torch.cuda.is_available() else "cpu"
        elif args.device == "cuda" and not torch.cuda.is_available():
            parser.error("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    elif args.workers is None:
        args.workers = min(MAX_WORKERS, len(os.sched_getaffinity(0)))
    return build(MaskConfig, args)


def image_jobs(config: MaskConfig) -> list[ImageJob]:
    """Every training image of the configured states, checked to exist inside the scene folder."""
    jobs = []
    for name in config.states:
        state = STATES.index(name)
        path = transforms_path(config.scene_dir, state, "train")
        meta = read_transforms(path)
        fov_y = meta.get("camera_angle_y")
        for image in frame_paths(config.scene_dir, path, meta):
            jobs.append(ImageJob(state, image, mask_path(config.output_masks, state, "train", image.stem),
                                 float(meta["camera_angle_x"]), None if fov_y is None else float(fov_y)))
    return jobs


def read_frame(job: ImageJob, white_background: bool) -> Frame:
    """The image of `job` with its depth map when one exists."""
    rgb, alpha = read_rgba(job.image, white_background)
    height, width = alpha.shape
    depth_path = companion_path(job.image, "depth", ".png")
    depth = read_depth_png(depth_path) if depth_path.is_file() else None
    if depth is not None and depth.shape != alpha.shape:
        raise DatasetError(f"depth image {depth_path} is {depth.shape[1]}x{depth.shape[0]}, "
                           f"its image {job.image} is {width}x{height}")
    fx = fov_to_focal(job.fov_x, width)
    fy = fx if job.fov_y is None else fov_to_focal(job.fov_y, height)
    return Frame(rgb, alpha, depth, fx, fy)


def build_segmenter(config: MaskConfig) -> Segmenter:
    """SAM from `--sam_checkpoint` (a `CheckpointError` with directions when it is missing) or the classical one."""
    if config.segmenter == "classic":
        print("stage 1: --segmenter classic: Felzenszwalb over-segmentation on colour, depth and normals stands in "
              "for SAM; it is a WEAKER part prior than SAM's masks.", flush=True)
        return ClassicSegmenter()
    from segmentation.sam import SamSegmenter, load_sam  # segment_anything loads torchvision: only for SAM

    sam = load_sam(Path(config.sam_checkpoint), config.model_type, config.device)
    return SamSegmenter(sam, config.points_per_side, config.points_per_batch)


def save_mask(path: Path, labels: np.ndarray) -> None:
    """Write a label map (H, W) int32 atomically."""
    with atomic_path(path) as tmp:
        np.save(tmp, labels.astype(np.int32), allow_pickle=False)


def save_overlay(path: Path, frame: Frame, labels: np.ndarray) -> None:
    """Write the overlay PNG of `labels` on the image composited over white, atomically."""
    picture = overlay(frame.composite(1.0).astype(np.float32) / 255.0, labels)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
            raise OSError(f"cannot write {path}")


def segment_image(segmenter: Segmenter, white_background: bool, job: ImageJob) -> tuple[Frame, np.ndarray]:
    """The frame of `job` and its label map (H, W) int32; an image without foreground is an error."""
    frame = read_frame(job, white_background)
    if not frame.foreground.any():
        raise DatasetError(f"{job.image} has no foreground (alpha > {FOREGROUND_ALPHA} nowhere); nothing to segment")
    return frame, label_map(segmenter(frame), frame.foreground)


def segment_and_save(segmenter: Segmenter, config: MaskConfig, job: ImageJob) -> int:
    """Segment the image of `job`, write its label map (and its overlay with --save_visualization); its number of
    regions."""
    frame, labels = segment_image(segmenter, config.white_background, job)
    save_mask(job.mask, labels)
    if config.save_visualization:
        save_overlay(mask_overlay_path(config.output_dir, job.state, job.image.stem), frame, labels)
    return int(labels.max())


def segment_all(segmenter: Segmenter, jobs: list[ImageJob], config: MaskConfig, workers: int,
                desc: str) -> list[int]:
    """`segment_and_save` every job, in `workers` forked processes when more than one (the classic segmenter is
    per-image CPU work; forked workers start without importing anything again); region counts in job order."""
    work = partial(segment_and_save, segmenter, config)
    bar = partial(tqdm, total=len(jobs), desc=desc, unit="image")
    if workers == 1:
        return list(bar(map(work, jobs)))
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return list(bar(pool.imap(work, jobs)))


def run(config: MaskConfig) -> None:
    """Segment every training image of the scene that has no mask yet (all of them with `--overwrite`)."""
    if not config.scene_dir.is_dir():
        raise DatasetError(f"scene folder {config.scene_dir} does not exist")
    jobs = image_jobs(config)
    done = [job for job in jobs if job.mask.is_file() and not config.overwrite]
    todo = [job for job in jobs if job not in done]
    if done:
        print(f"stage 1: skipped {len(done)} of {len(jobs)} images whose mask exists (--overwrite redoes them)")
    if config.save_visualization:
        for job in done:
            path = mask_overlay_path(config.output_dir, job.state, job.image.stem)
            if not path.is_file():
                save_overlay(path, read_frame(job, config.white_background), read_mask(job.mask))
    if not todo:
        return
    segmenter = build_segmenter(config)
    workers = min(config.workers, len(todo))
    start = time.perf_counter()
    counts = segment_all(segmenter, todo, config, workers, f"stage 1 masks ({config.segmenter})")
    seconds = time.perf_counter() - start
    prior = f"sam {config.model_type}" if config.segmenter == "sam" else "classic, weaker prior"
    print(f"stage 1 ({prior}): {len(todo)} images, {np.mean(counts):.1f} masks per image "
          f"(min {min(counts)}, max {max(counts)}), {seconds / len(todo):.2f} s per image "
          f"({seconds:.1f} s, {workers} process{'es' if workers > 1 else ''}) -> {config.output_masks}/")


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        run(config)
    except (DatasetError, CheckpointError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
