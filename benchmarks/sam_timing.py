"""Stage 1's SAM path timed with the tests' tiny SAM (no ViT-H weights needed): per-image seconds on this device.

    python benchmarks/sam_timing.py --scene_dir data/gear/suite/cabinet [--images 8] [--device cuda]

Copies the first `--images` training views of the start state into a temporary dataset, saves the tiny SAM of
tests/tiny_sam.py (the real segment_anything encoder, prompt encoder and decoder at toy width, weights set to
find dark regions) as a checkpoint, and runs `utils/get_mask.py` on it with the paper's automatic-mask settings
(points_per_side 32).  The time covers everything but the image encoder's real cost: reading, 1024 prompts per image
through the decoder, SAM's mask post-processing, filtering, painting and writing. A ViT-H encoder adds its own
forward pass per image (about 0.1-0.5 s on a current GPU, not measured here: the weights are not available).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segment_anything import sam_model_registry  # noqa: E402

from scene.dataset_readers import frame_image_path, transforms_path  # noqa: E402
from tests.tiny_sam import make_dark_region_sam, tiny_sam  # noqa: E402
from utils import get_mask  # noqa: E402


def trimmed_scene(scene_dir: Path, out: Path, images: int) -> None:
    """`out` with the start state's first `images` training frames of `scene_dir` (images and depth)."""
    source = transforms_path(scene_dir, 0, "train")
    meta = json.loads(source.read_text())
    meta["frames"] = meta["frames"][:images]
    for frame in meta["frames"]:
        image = frame_image_path(scene_dir, frame["file_path"])
        for path in image.parent.parent.rglob(f"{image.stem}.*"):
            target = out / path.relative_to(scene_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    (out / source.name).write_text(json.dumps(meta))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scene_dir", required=True)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--points_per_side", type=int, default=32)
    opts = parser.parse_args(argv)
    sam_model_registry["tiny_test"] = lambda checkpoint=None: tiny_sam()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        trimmed_scene(Path(opts.scene_dir), root / "data" / "bench" / "sam" / "scene", opts.images)
        checkpoint = root / "sam_tiny.pth"
        torch.save(make_dark_region_sam(tiny_sam()).state_dict(), checkpoint)
        start = time.perf_counter()
        code = get_mask.main(["--dataset_path", "bench/sam/scene", "--data_root", str(root / "data"),
                              "--output_root", str(root / "out"), "--sam_checkpoint", str(checkpoint),
                              "--model_type", "tiny_test", "--device", opts.device, "--states", "start",
                              "--points_per_side", str(opts.points_per_side)])
        seconds = time.perf_counter() - start
    print(f"sam tiny timing on {opts.device} ({torch.cuda.get_device_name() if opts.device == 'cuda' else 'cpu'}): "
          f"{opts.images} images in {seconds:.1f} s including model load, {seconds / opts.images:.2f} s per image")
    return code


if __name__ == "__main__":
    sys.exit(main())
