"""Stage 1: per-image 2D part priors (DESIGN.md §5).

For every training image of the chosen states, segment the image (Segment Anything's automatic masks, or a classical
over-segmentation when asked with `--segmenter classic`), keep the regions on the object and save them as an int32
label map `<scene>/<state>/train/mask/XXXX.npy` (0 = no region). Images already done are skipped unless
`--overwrite`. Run from the repository root:

    python utils/get_mask.py --dataset_path gear/synthetic/cabinet [--sam_checkpoint submodules/sam_vit_h_4b8939.pth]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import NamedTuple

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np
import torch
from tqdm import tqdm

from scene.cameras import STATES
from scene.dataset_readers import (
    DatasetError, companion_path, frame_image_path, read_depth_png, read_mask, read_rgba, read_transforms,
    transforms_path,
)
from utils.graphics_utils import fov_to_focal
from utils.io_utils import atomic_path
from utils.label_maps import label_map, overlay
from utils.segmenters import (
    FOREGROUND_ALPHA, SAM_CHECKPOINT, SAM_SETTINGS, CheckpointError, ClassicSegmenter, Frame, Segmenter,
)

MAX_WORKERS = 8


class ImageJob(NamedTuple):
    """One training image to segment: its state name, rgba path, mask path and the field of view of its transforms."""

    state: str
    image: Path
    mask: Path
    fov_x: float
    fov_y: float | None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Stage 1: part priors (label maps) for every training image.")
    parser.add_argument("--dataset_path", required=True, help="<dataset>/<subset>/<scene>, relative to --data_root")
    parser.add_argument("--data_root", default="data")
    parser.add_argument("--output_root", default="outputs",
                        help="overlays go to <output_root>/<dataset_path>/masks_vis")
    parser.add_argument("--segmenter", choices=("sam", "classic"), default="sam",
                        help="sam (default) or classic: a classical over-segmentation, a weaker prior")
    parser.add_argument("--sam_checkpoint", type=Path, default=SAM_CHECKPOINT)
    parser.add_argument("--model_type", default="vit_h",
                        help="segment_anything.sam_model_registry key matching --sam_checkpoint (vit_h, vit_l, vit_b)")
    parser.add_argument("--device", choices=("cuda", "cpu"), help="SAM's device (default: cuda when available)")
    parser.add_argument("--workers", type=int,
                        help=f"processes for the classic segmenter (default: the available cores, at most "
                             f"{MAX_WORKERS}); SAM segments one image at a time on --device")
    parser.add_argument("--points_per_side", type=int, default=SAM_SETTINGS["points_per_side"],
                        help="SAM prompt grid (the paper: 32); lower only for quick tests")
    parser.add_argument("--points_per_batch", type=int, default=64, help="SAM prompts per forward pass (memory)")
    parser.add_argument("--states", nargs="+", choices=STATES, default=list(STATES))
    parser.add_argument("--save_visualization", action="store_true", help="write overlay PNGs of the label maps")
    parser.add_argument("--overwrite", action="store_true", help="redo images whose mask already exists")
    args = parser.parse_args(argv)
    if Path(args.dataset_path).is_absolute():
        parser.error(f"--dataset_path must be <dataset>/<subset>/<scene> relative to --data_root, "
                     f"got {args.dataset_path}")
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
    return args


def image_jobs(scene_dir: Path, states: list[str]) -> list[ImageJob]:
    """Every training image of `states`, checked to exist."""
    jobs = []
    for state in states:
        path = transforms_path(scene_dir, STATES.index(state), "train")
        meta = read_transforms(path)
        for i, frame in enumerate(meta["frames"]):
            image = frame_image_path(scene_dir, frame["file_path"])
            if not image.is_file():
                raise DatasetError(f"{path}: frame {i} image {image} is missing")
            fov_y = meta.get("camera_angle_y")
            jobs.append(ImageJob(state, image, companion_path(image, "mask", ".npy"), float(meta["camera_angle_x"]),
                                 None if fov_y is None else float(fov_y)))
    return jobs


def read_frame(job: ImageJob) -> Frame:
    """The image of `job` with its depth map when one exists."""
    rgb, alpha = read_rgba(job.image)
    height, width = alpha.shape
    depth_path = companion_path(job.image, "depth", ".png")
    depth = read_depth_png(depth_path) if depth_path.is_file() else None
    if depth is not None and depth.shape != alpha.shape:
        raise DatasetError(f"depth image {depth_path} is {depth.shape[1]}x{depth.shape[0]}, "
                           f"its image {job.image} is {width}x{height}")
    fx = fov_to_focal(job.fov_x, width)
    fy = fx if job.fov_y is None else fov_to_focal(job.fov_y, height)
    return Frame(rgb, alpha, depth, fx, fy)


def build_segmenter(args: argparse.Namespace) -> Segmenter:
    """SAM from `--sam_checkpoint` (a `CheckpointError` with directions when it is missing) or the classical one."""
    if args.segmenter == "classic":
        print("stage 1: --segmenter classic: Felzenszwalb over-segmentation on colour, depth and normals stands in "
              "for SAM; it is a WEAKER part prior than SAM's masks.", flush=True)
        return ClassicSegmenter()
    from utils.sam_segmenter import SamSegmenter, load_sam  # segment_anything loads torchvision: only for SAM

    sam = load_sam(args.sam_checkpoint, args.model_type, args.device)
    return SamSegmenter(sam, args.points_per_side, args.points_per_batch)


def overlay_path(vis_dir: Path, job: ImageJob) -> Path:
    """`<vis_dir>/<state>_XXXX.png` of one image."""
    return vis_dir / f"{job.state}_{job.image.stem}.png"


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


def segment_image(segmenter: Segmenter, job: ImageJob) -> tuple[Frame, np.ndarray]:
    """The frame of `job` and its label map (H, W) int32; an image without foreground is an error."""
    frame = read_frame(job)
    if not frame.foreground.any():
        raise DatasetError(f"{job.image} has no foreground (alpha > {FOREGROUND_ALPHA} nowhere); nothing to segment")
    return frame, label_map(segmenter(frame), frame.foreground)


def segment_and_save(segmenter: Segmenter, vis_dir: Path | None, job: ImageJob) -> int:
    """Segment the image of `job`, write its label map (and its overlay under `vis_dir`); its number of regions."""
    frame, labels = segment_image(segmenter, job)
    save_mask(job.mask, labels)
    if vis_dir is not None:
        save_overlay(overlay_path(vis_dir, job), frame, labels)
    return int(labels.max())


def segment_all(segmenter: Segmenter, jobs: list[ImageJob], vis_dir: Path | None, workers: int,
                desc: str) -> list[int]:
    """`segment_and_save` every job, in `workers` forked processes when more than one (the classic segmenter is
    per-image CPU work; forked workers start without importing anything again); region counts in job order."""
    work = partial(segment_and_save, segmenter, vis_dir)
    bar = partial(tqdm, total=len(jobs), desc=desc, unit="image")
    if workers == 1:
        return list(bar(map(work, jobs)))
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return list(bar(pool.imap(work, jobs)))


def run(args: argparse.Namespace) -> None:
    """Segment every training image of the scene that has no mask yet (all of them with `--overwrite`)."""
    scene_dir = Path(args.data_root) / args.dataset_path
    if not scene_dir.is_dir():
        raise DatasetError(f"scene folder {scene_dir} does not exist")
    vis_dir = Path(args.output_root) / args.dataset_path / "masks_vis"
    jobs = image_jobs(scene_dir, args.states)
    done = [job for job in jobs if job.mask.is_file() and not args.overwrite]
    todo = [job for job in jobs if job not in done]
    if done:
        print(f"stage 1: skipped {len(done)} of {len(jobs)} images whose mask exists (--overwrite redoes them)")
    if args.save_visualization:
        for job in done:
            if not overlay_path(vis_dir, job).is_file():
                save_overlay(overlay_path(vis_dir, job), read_frame(job), read_mask(job.mask))
    if not todo:
        return
    segmenter = build_segmenter(args)
    workers = min(args.workers, len(todo))
    start = time.perf_counter()
    counts = segment_all(segmenter, todo, vis_dir if args.save_visualization else None, workers,
                         f"stage 1 masks ({args.segmenter})")
    seconds = time.perf_counter() - start
    prior = f"sam {args.model_type}" if args.segmenter == "sam" else "classic, weaker prior"
    print(f"stage 1 ({prior}): {len(todo)} images, {np.mean(counts):.1f} masks per image "
          f"(min {min(counts)}, max {max(counts)}), {seconds / len(todo):.2f} s per image "
          f"({seconds:.1f} s, {workers} process{'es' if workers > 1 else ''}) "
          f"-> {scene_dir}/<state>/train/mask/")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except (DatasetError, CheckpointError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
