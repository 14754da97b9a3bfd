"""Synthetic two-state articulated-object scenes in the dataset layout the pipeline reads, rendered by CPU ray casting.

    python -m data_tools.synthetic --category cabinet --seed 0 --out data/synthetic/cabinet/seed0 --res 256 --views 48

writes `transforms_{train,test}_{start,end}.json`, `<state>/<split>/{rgba,depth,part}/XXXX.png`, `gt/trans.json` and
the ground-truth part meshes `gt/<state>/<state>_{static,dynamic_i,}_rotate.ply` (the exact rendered geometry).
Part images hold 0 = background, 1 = static body, i + 2 = movable part i (joint i of trans.json, `dynamic_i`); they
are for tests and oracle ablations only. Train cameras follow a Fibonacci spiral, test cameras are random, and each
state has its own cameras; everything is deterministic by seed.

By default the movable parts are made of the body's material, the object stands in a random orientation and has its
own light, and openings span each joint's full range, small ones included (`data_tools.objects`); `--appearance
distinct --orientation upright --lighting fixed --motion large` gives parts of distinct hues, upright, under one
fixed light, opened wide.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import trimesh
from tqdm import tqdm

from data_tools.articulated import STATE_NAMES, ObjectSpec
from data_tools.cameras import FOV_DEG, sample_poses, square_intrinsics
from data_tools.lighting import DEFAULT_LIGHTING, LIGHTINGS
from data_tools.objects import (APPEARANCES, DEFAULT_APPEARANCE, DEFAULT_MOTION, DEFAULT_ORIENTATION, MOTIONS,
                                ORIENTATIONS, build_object, categories)
from data_tools.raycast import RenderedView, StateScene, check_supersample, render_view
from evaluation.meshes import save_mesh
from utils.io_utils import atomic_path, write_json

SPLITS = ("train", "test")
# What a generated scene holds, plus what the pipeline derives from it (stale once the scene is regenerated).
SCENE_ENTRIES = ("start", "end", "gt", "transforms_*.json", "point_cloud_*.ply")


def write_png(path: Path, image: np.ndarray) -> None:
    """Write an RGBA (H, W, 4) uint8 or single-channel (H, W) uint8/uint16 image as PNG, atomically."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise OSError(f"could not write image {path}")


def write_view(out_dir: Path, state: str, split: str, index: int, view: RenderedView) -> str:
    """Write the rgba, depth and part PNGs of one view; returns the rgba path relative to `out_dir`."""
    name = f"{index:04d}.png"
    for kind, image in (("rgba", view.rgba), ("depth", view.depth_mm), ("part", view.part)):
        write_png(out_dir / state / split / kind / name, image)
    return f"{state}/{split}/rgba/{name}"


def write_gt_meshes(gt_dir: Path, state: str, vertices: list[np.ndarray], faces: list[np.ndarray]) -> None:
    """Write the static, each dynamic and the whole-object mesh of one state under `gt_dir`."""
    meshes = [trimesh.Trimesh(v, f, process=False) for v, f in zip(vertices, faces)]
    save_mesh(gt_dir / f"{state}_static_rotate.ply", meshes[0])
    for i, mesh in enumerate(meshes[1:]):
        save_mesh(gt_dir / f"{state}_dynamic_{i}_rotate.ply", mesh)
    save_mesh(gt_dir / f"{state}_rotate.ply", trimesh.util.concatenate(meshes))


def camera_rng(seed: int, state: int, split: str) -> np.random.Generator:
    """Independent, seed-determined random stream for the cameras of one state and split."""
    return np.random.default_rng([seed, 1 + 2 * state + SPLITS.index(split)])


def prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse to write over an existing scene unless `overwrite`, in which case remove the old scene's files.

    Only the generator's outputs and files derived from them (SCENE_ENTRIES) are removed; anything else stays.
    """
    existing = [path for pattern in SCENE_ENTRIES for path in sorted(out_dir.glob(pattern))]
    if not existing:
        return
    if not overwrite:
        raise FileExistsError(f"{out_dir} already holds a scene ({existing[0].name}, ...); "
                              "pass --overwrite to replace it")
    for path in existing:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def check_arguments(res: int, views: int, test_views: int, supersample: int) -> None:
    """Raise ValueError for sizes the generator or the dataset readers cannot use."""
    if res < 8:
        raise ValueError(f"res must be at least 8 pixels, got {res}")
    if views < 1 or test_views < 1:
        raise ValueError(f"views and test_views must be at least 1, got {views} and {test_views}")
    check_supersample(supersample)


def render_state(spec: ObjectSpec, state: int, out_dir: Path, res: int, counts: dict[str, int], supersample: int,
                 bar: tqdm) -> None:
    """Write one state's GT meshes, its views of every split and their transforms json files."""
    name = STATE_NAMES[state]
    vertices = spec.posed_vertices(state)
    faces = [part.mesh.faces for part in spec.parts]
    write_gt_meshes(out_dir / "gt" / name, name, vertices, faces)
    scene = StateScene(vertices, faces, spec.part_poses(state), [part.texture for part in spec.parts], spec.lighting)
    K = square_intrinsics(res)
    for split in SPLITS:
        frames = []
        poses = sample_poses(counts[split], camera_rng(spec.seed, state, split), fibonacci=split == "train")
        for index, pose in enumerate(poses):
            file_path = write_view(out_dir, name, split, index, render_view(scene, pose, K, res, supersample))
            frames.append({"file_path": file_path, "time": float(state), "transform_matrix": pose.tolist()})
            bar.update()
        fov = float(np.radians(FOV_DEG))
        write_json(out_dir / f"transforms_{split}_{name}.json",
                   {"camera_angle_x": fov, "camera_angle_y": fov, "frames": frames})


def generate_scene(category: str, out_dir: str | Path, res: int = 256, views: int = 48, test_views: int = 12,
                   seed: int = 0, open_state: str = "end", supersample: int = 3, overwrite: bool = False,
                   progress: bool = True, *, appearance: str = DEFAULT_APPEARANCE,
                   orientation: str = DEFAULT_ORIENTATION, lighting: str = DEFAULT_LIGHTING,
                   motion: str = DEFAULT_MOTION) -> dict:
    """Generate one two-state scene of `category` into `out_dir`; returns a summary (parts, joints, timing).

    `views`/`test_views` are per state; `open_state` is the state in which the movable parts are open;
    `supersample` (odd) sub-rays per pixel side anti-alias colour and alpha; `appearance`, `orientation`, `lighting`
    and `motion` are `build_object`'s options.
    """
    check_arguments(res, views, test_views, supersample)
    start = time.perf_counter()
    spec = build_object(category, seed, open_state, appearance=appearance, orientation=orientation,
                        lighting=lighting, motion=motion)
    out_dir = Path(out_dir)
    prepare_out_dir(out_dir, overwrite)
    counts = {"train": views, "test": test_views}
    with tqdm(total=2 * (views + test_views), desc=f"{category} seed {seed}", disable=not progress) as bar:
        for state in range(2):
            render_state(spec, state, out_dir, res, counts, supersample, bar)
    write_json(out_dir / "gt" / "trans.json", {"trans_info": spec.trans_info()})
    return {
        "category": category,
        "seed": int(seed),
        "open_state": open_state,
        "appearance": appearance,
        "orientation": orientation,
        "lighting": lighting,
        "motion": motion,
        "out_dir": str(out_dir),
        "res": res,
        "views": views,
        "test_views": test_views,
        "parts": [part.name for part in spec.parts],
        "trans_info": spec.trans_info(),
        "seconds": time.perf_counter() - start,
    }


def describe(summary: dict) -> str:
    """One-line summary of a generated scene."""
    joints = ", ".join(
        f"{j['type']} {j[j['type']]['l']:.3g}->{j[j['type']]['r']:.3g}" for j in summary["trans_info"]
    )
    return (f"{summary['category']} seed {summary['seed']}: {len(summary['parts'])} parts ({joints}); "
            f"{summary['views']}+{summary['test_views']} views per state at {summary['res']} px "
            f"in {summary['seconds']:.1f} s -> {summary['out_dir']}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Generate a synthetic two-state articulated-object scene.")
    parser.add_argument("--category", required=True, choices=categories())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="scene folder, e.g. data/<dataset>/<subset>/<scene>")
    parser.add_argument("--res", type=int, default=256, help="image width and height in pixels")
    parser.add_argument("--views", type=int, default=48, help="training views per state")
    parser.add_argument("--test_views", type=int, default=12, help="test views per state")
    parser.add_argument("--open_state", choices=STATE_NAMES, default="end", help="state in which the parts are open")
    parser.add_argument("--supersample", type=int, default=3, help="odd number of sub-rays per pixel side")
    parser.add_argument("--appearance", choices=APPEARANCES, default=DEFAULT_APPEARANCE,
                        help="material: movable parts in the body's material; distinct: a hue per part")
    parser.add_argument("--orientation", choices=ORIENTATIONS, default=DEFAULT_ORIENTATION,
                        help="random: any yaw and a tilt of up to 15 degrees; upright: front towards -y, z up")
    parser.add_argument("--lighting", choices=LIGHTINGS, default=DEFAULT_LIGHTING,
                        help="random: a light per object; fixed: one light for every object")
    parser.add_argument("--motion", choices=MOTIONS, default=DEFAULT_MOTION,
                        help="full: openings anywhere in each joint's range, small ones included; large: upper half")
    parser.add_argument("--overwrite", action="store_true", help="replace a scene already in --out")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = generate_scene(args.category, args.out, args.res, args.views, args.test_views, args.seed,
                                 args.open_state, args.supersample, args.overwrite, appearance=args.appearance,
                                 orientation=args.orientation, lighting=args.lighting, motion=args.motion)
    except (ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(describe(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
