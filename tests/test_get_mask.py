"""Stage 1 (utils/get_mask.py, segmentation/): label-map filtering and painting, the SAM path with a tiny hand-set SAM
loaded through segment_anything's registry, the classical fallback against ground-truth parts, the flags (new and
older spellings), outputs under the output root only, and errors on bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from segment_anything import sam_model_registry

from data_tools.synthetic import generate_scene
from scene.contract import STATES, mask_path, masks_dir, scene_output_dir
from scene.dataset_readers import companion_path, read_rgba
from segmentation.label_maps import clip_masks, label_map, paint_labels
from segmentation.sam import SamSegmenter, load_sam, masks_from_records
from segmentation.segmenters import CheckpointError, Frame, depth_normals
from tiny_sam import make_dark_region_sam, tiny_sam
from utils import get_mask

REPO = Path(__file__).resolve().parents[1]
CATEGORIES = ("cabinet", "drawers", "fridge", "storage", "laptop", "oven")


def boundary_score(labels: np.ndarray, parts: np.ndarray) -> tuple[int, int]:
    """(pixels in a region whose majority GT part is theirs, labelled pixels), over pixels with a GT part."""
    valid = (labels > 0) & (parts > 0)
    good = 0
    for region in np.unique(labels[valid]):
        good += int(np.bincount(parts[valid & (labels == region)]).max())
    return good, int(valid.sum())


def scene_images(scene: Path, state: str, out: Path) -> list[tuple[Path, Path]]:
    """(rgba path, stage-1 mask path under the output root `out`) of every training frame of `state`."""
    frames = json.loads((scene / f"transforms_train_{state}.json").read_text())["frames"]
    masks = masks_dir(scene_output_dir(out, *scene.parts[-3:]))
    return [(scene / f["file_path"], mask_path(masks, STATES.index(state), "train", Path(f["file_path"]).stem))
            for f in frames]


def folder_state(root: Path) -> dict[str, int]:
    """Every file under `root` with its modification time: to show that a stage wrote nothing there."""
    return {str(path): path.stat().st_mtime_ns for path in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """gear/synthetic/<category> scenes at 96 px, 4 training views per state."""
    root = tmp_path_factory.mktemp("data")
    for category in CATEGORIES:
        # Parts of distinct hues, upright, under the fixed light: the classic segmenter's boundary test below needs
        # parts that differ in colour (the generator's default gives them the body's material).
        generate_scene(category, root / "gear" / "synthetic" / category, res=96, views=4, test_views=1, seed=0,
                       progress=False, appearance="distinct", orientation="upright", lighting="fixed")
    return root


@pytest.fixture()
def tiny_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The dark-region tiny SAM saved as a state dict, its (random-init) builder registered as `tiny_test`."""
    monkeypatch.setitem(sam_model_registry, "tiny_test", lambda checkpoint=None: tiny_sam())
    torch.manual_seed(0)
    path = tmp_path / "sam_tiny.pth"
    torch.save(make_dark_region_sam(tiny_sam()).state_dict(), path)
    return path


def disc(shape: tuple[int, int], centre: tuple[int, int], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def sam_record(mask: np.ndarray) -> dict:
    """A record in the format of `SamAutomaticMaskGenerator.generate` (binary_mask mode)."""
    ys, xs = np.nonzero(mask)
    bbox = [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]
    return {"segmentation": mask, "area": int(mask.sum()), "bbox": bbox, "predicted_iou": 0.95,
            "point_coords": [[float(xs.mean()), float(ys.mean())]], "stability_score": 0.97,
            "crop_box": [0, 0, mask.shape[1], mask.shape[0]]}


def box(shape: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[rows[0]:rows[1], cols[0]:cols[1]] = True
    return mask


def test_label_map_filters_clips_and_paints_small_regions_on_top() -> None:
    shape = (64, 64)
    foreground = disc(shape, (32, 32), 24)
    whole = disc(shape, (32, 32), 26)                                 # the object plus a rim of background
    half_out = box(shape, (0, 64), (40, 64))                          # 34 % inside: kept, clipped
    background = ~disc(shape, (32, 32), 20)                           # 19 % inside: dropped
    speck = disc(shape, (32, 32), 3)                                  # 29 px: dropped
    small = disc(shape, (30, 30), 5)                                  # 81 px, on top of `whole`
    hidden = box(shape, (36, 46), (16, 26))                           # 100 px, painted over by `top` and `bottom`
    top, bottom = box(shape, (36, 41), (16, 26)), box(shape, (41, 46), (16, 26))  # 50 px each: kept
    masks = (small, top, speck, hidden, half_out, background, whole, bottom)
    inside = [(m & foreground).sum() / m.sum() for m in (half_out, background)]
    assert inside[0] > 0.3 > inside[1]
    assert (hidden <= foreground).all() and not (hidden & (small | half_out)).any()

    labels = label_map(masks_from_records([sam_record(m) for m in masks]), foreground)

    assert labels.dtype == np.int32 and labels.shape == shape
    assert not labels[~foreground].any()
    assert set(np.unique(labels)) == {0, 1, 2, 3, 4, 5}               # consecutive after `hidden` vanished
    for label, mask in ((3, small), (4, top), (5, bottom)):           # smaller ones painted later, intact
        np.testing.assert_array_equal(labels == label, mask)
    np.testing.assert_array_equal(labels == 2, half_out & foreground)
    np.testing.assert_array_equal(labels == 1, foreground & ~half_out & ~small & ~hidden)


def test_clip_masks_thresholds_and_shape_check() -> None:
    foreground = np.zeros((20, 20), bool)
    foreground[:, :10] = True
    mask = np.zeros((20, 20), bool)
    mask[:, 7:17] = True                                              # 60 px inside of 200: 30 % exactly
    assert len(clip_masks([mask], foreground)) == 1
    assert clip_masks([mask], foreground, min_inside=0.31) == []
    assert clip_masks([mask], foreground, min_area=61) == []
    with pytest.raises(ValueError, match="shape"):
        clip_masks([mask[:10]], foreground)
    with pytest.raises(ValueError, match="2-D bool"):
        masks_from_records([{"segmentation": mask.astype(np.uint8)}])
    assert paint_labels([], (3, 4)).shape == (3, 4)


def test_depth_normals_of_a_tilted_plane() -> None:
    fx = fy = 50.0
    h, w = 32, 40
    u = (np.arange(w) + 0.5 - w / 2) / fx
    # plane z = 2 + 0.5 x  <=>  z = 2 / (1 - 0.5 u) along the ray (u, v, 1)
    depth = np.broadcast_to(2.0 / (1.0 - 0.5 * u)[None, :], (h, w)).copy()
    expected = np.array([-0.5, 0.0, 1.0]) / np.sqrt(1.25)
    normals = depth_normals(depth, fx, fy)
    np.testing.assert_allclose(np.abs(normals[1:-1, 1:-1] @ expected), 1.0, atol=1e-6)
    assert np.all(np.abs(normals[..., 1]) < 1e-9)


def test_sam_path_with_tiny_checkpoint_writes_masks_and_skips_done_images(
        tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    scene = tmp_path / "data" / "gear" / "synthetic" / "cabinet"
    generate_scene("cabinet", scene, res=64, views=2, test_views=1, seed=1, progress=False)
    data = folder_state(tmp_path / "data")
    # the older spellings of the scene and the data root (--dataset_path, --data_root) still work
    args = ["--dataset_path", "gear/synthetic/cabinet", "--data_root", str(tmp_path / "data"), "--output_root",
            str(tmp_path / "out"), "--sam_checkpoint", str(tiny_checkpoint), "--model_type", "tiny_test",
            "--device", "cpu", "--points_per_side", "2", "--states", "start",
            "--save_visualization", "--overwrite"]
    assert get_mask.main(args) == 0
    assert "stage 1 (sam tiny_test): 2 images" in capsys.readouterr().out
    assert folder_state(tmp_path / "data") == data                   # nothing written into the data folder
    for image_path, mask_path in scene_images(scene, "start", tmp_path / "out"):
        labels = np.load(mask_path, allow_pickle=False)
        alpha = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED)[..., 3]
        assert labels.dtype == np.int32 and labels.shape == alpha.shape
        assert not labels[alpha <= 127].any()
        # the tiny SAM finds the object (darker than the white background) as one mask
        assert labels.max() == 1 and (labels[alpha > 127] == 1).mean() > 0.95
        assert (tmp_path / "out" / "gear/synthetic/cabinet/masks_vis" / f"start_{image_path.stem}.png").is_file()
    assert not list(mask_path.parent.glob(".*"))                     # no temporary files left
    mtimes = [m.stat().st_mtime_ns for _, m in scene_images(scene, "start", tmp_path / "out")]

    assert get_mask.main(args[:-1]) == 0                             # no --overwrite: nothing to do
    assert "skipped 2 of 2 images" in capsys.readouterr().out
    assert [m.stat().st_mtime_ns for _, m in scene_images(scene, "start", tmp_path / "out")] == mtimes


def test_missing_checkpoint_exits_with_directions(data_root: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "sam_vit_h_4b8939.pth"
    result = subprocess.run(
        [sys.executable, "utils/get_mask.py", "--dataset_path", "gear/synthetic/oven", "--data_root", str(data_root),
         "--output_root", str(tmp_path / "out"),
         "--sam_checkpoint", str(missing), "--device", "cpu", "--states", "end", "--overwrite"],
        cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": ""},
    )
    assert result.returncode != 0
    for text in (str(missing), "submodules/sam_vit_h_4b8939.pth", "submodules/README.md", "--sam_checkpoint",
                 "--segmenter classic"):
        assert text in result.stderr


def test_sam_segmenter_returns_no_masks_when_no_prompt_passes_the_filters(data_root: Path) -> None:
    sam = make_dark_region_sam(tiny_sam())
    with torch.no_grad():
        sam.mask_decoder.iou_prediction_head.layers[-1].bias.fill_(0.0)  # predicted IoU 0 < 0.86 everywhere
    image_path, _ = scene_images(data_root / "gear" / "synthetic" / "laptop", "start", data_root)[0]
    frame = Frame(*read_rgba(image_path), depth=None, fx=100.0, fy=100.0)
    assert SamSegmenter(sam, points_per_side=2)(frame) == []          # segment-anything 1.0 alone raises IndexError


def test_unloadable_checkpoint_names_the_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_sam(junk, "vit_b", "cpu")
    with pytest.raises(CheckpointError, match="unknown SAM model type 'vit_x'"):
        load_sam(junk, "vit_x", "cpu")


def test_image_without_foreground_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    scene = tmp_path / "data" / "d" / "s" / "empty"
    (scene / "start/train/rgba").mkdir(parents=True)
    cv2.imwrite(str(scene / "start/train/rgba/0000.png"), np.zeros((16, 16, 4), np.uint8))
    frame = {"file_path": "start/train/rgba/0000.png", "transform_matrix": np.eye(4).tolist()}
    (scene / "transforms_train_start.json").write_text(json.dumps({"camera_angle_x": 0.8, "frames": [frame]}))
    args = ["--source_path", str(tmp_path / "data"), "--dataset", "d", "--subset", "s", "--scene_name", "empty",
            "--output_root", str(tmp_path / "out"), "--segmenter", "classic", "--states", "start"]
    assert get_mask.main(args) == 1
    assert "0000.png has no foreground" in capsys.readouterr().err
    assert not (tmp_path / "out" / "d/s/empty/masks/start/train/0000.npy").exists()
    assert get_mask.main(["--dataset_path", "d/s/missing", "--data_root", str(tmp_path / "data"),
                          "--output_root", str(tmp_path / "out")]) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("category", CATEGORIES)
def test_classic_segmenter_respects_part_boundaries(data_root: Path, category: str) -> None:
    out = data_root.parent / f"{data_root.name}_out"
    assert get_mask.main(["--source_path", str(data_root), "--scene_name", category, "--output_root", str(out),
                          "--segmenter", "classic", "--overwrite"]) == 0
    good = labelled = on_parts = 0
    for state in ("start", "end"):
        for image_path, mask_path in scene_images(data_root / "gear" / "synthetic" / category, state, out):
            parts = cv2.imread(str(companion_path(image_path, "part", ".png")), cv2.IMREAD_UNCHANGED)
            g, n = boundary_score(np.load(mask_path, allow_pickle=False), parts)
            good, labelled, on_parts = good + g, labelled + n, on_parts + int((parts > 0).sum())
    assert labelled > 0.8 * on_parts                                  # the regions cover the object
    assert good / labelled >= 0.9


def test_classic_workers_write_the_same_masks_as_one_process(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    scene = tmp_path / "data" / "gear" / "synthetic" / "storage"
    generate_scene("storage", scene, res=64, views=3, test_views=1, seed=2, progress=False)
    args = ["--source_path", str(tmp_path / "data"), "--scene_name", "storage", "--output_root", str(tmp_path / "out"),
            "--segmenter", "classic", "--overwrite"]
    assert get_mask.main([*args, "--workers", "1"]) == 0
    serial = [np.load(m, allow_pickle=False) for state in ("start", "end")
              for _, m in scene_images(scene, state, tmp_path / "out")]
    assert "1 process)" in capsys.readouterr().out
    assert get_mask.main([*args, "--workers", "2"]) == 0
    assert "2 processes" in capsys.readouterr().out
    pooled = [np.load(m, allow_pickle=False) for state in ("start", "end")
              for _, m in scene_images(scene, state, tmp_path / "out")]
    assert len(pooled) == 6 and all(np.array_equal(a, b) for a, b in zip(serial, pooled))
    assert all(a.max() > 1 for a in pooled)


def test_a_worker_error_names_the_image(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    scene = tmp_path / "data" / "gear" / "synthetic" / "oven"
    generate_scene("oven", scene, res=48, views=3, test_views=1, seed=0, progress=False)
    image_path, mask_path = scene_images(scene, "end", tmp_path / "out")[1]
    cv2.imwrite(str(image_path), np.zeros((48, 48, 4), np.uint8))
    args = ["--source_path", str(tmp_path / "data"), "--scene_name", "oven", "--output_root", str(tmp_path / "out"),
            "--segmenter", "classic", "--states", "end", "--workers", "2"]
    assert get_mask.main(args) == 1
    assert f"{image_path.name} has no foreground" in capsys.readouterr().err
    assert not mask_path.exists()


def test_workers_are_checked() -> None:
    with pytest.raises(SystemExit):
        get_mask.parse_args(["--dataset_path", "a/b/c", "--segmenter", "classic", "--workers", "0"])
    with pytest.raises(SystemExit):
        get_mask.parse_args(["--dataset_path", "a/b/c", "--workers", "2"])  # SAM: one image at a time
    assert get_mask.parse_args(["--dataset_path", "a/b/c", "--segmenter", "classic", "--workers", "3"]).workers == 3


def test_both_spellings_of_the_scene_give_one_config_and_abbreviations_are_refused() -> None:
    new = get_mask.parse_args(["--source_path", "d", "--dataset", "paris", "--subset", "sapien", "--scene_name", "oven",
                               "--segmenter", "classic"])
    old = get_mask.parse_args(["--data_root", "d", "--dataset_path", "paris/sapien/oven", "--segmenter", "classic"])
    assert new == old and new.scene_dir == Path("d/paris/sapien/oven")
    assert new.output_masks == Path("outputs/paris/sapien/oven/masks")
    for argv in (["--dataset_path", "a/b/c", "--scene_name", "c"],    # the scene twice
                 ["--dataset_path", "a/b"],                          # not <dataset>/<subset>/<scene>
                 ["--scene_name", "c", "--segm", "classic"],         # an abbreviation of --segmenter
                 []):                                                # no scene
        with pytest.raises(SystemExit):
            get_mask.parse_args(argv)


def test_rgb_images_need_white_background(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """An image without alpha is refused (naming it) unless --white_background keys the alpha from the white."""
    scene = tmp_path / "data" / "gear" / "synthetic" / "laptop"
    generate_scene("laptop", scene, res=48, views=2, test_views=1, seed=0, progress=False)
    alphas = []
    for image_path, _ in scene_images(scene, "start", tmp_path / "out"):
        rgba = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED).astype(np.float32) / 255.0
        rgb = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])  # over white
        cv2.imwrite(str(image_path), np.round(rgb * 255.0).astype(np.uint8))
        alphas.append(rgba[..., 3])
    args = ["--source_path", str(tmp_path / "data"), "--scene_name", "laptop", "--output_root", str(tmp_path / "out"),
            "--segmenter", "classic", "--states", "start"]
    assert get_mask.main(args) == 1
    assert "0000.png has no alpha channel" in capsys.readouterr().err
    assert get_mask.main([*args, "--white_background"]) == 0
    for alpha, (_, mask_path) in zip(alphas, scene_images(scene, "start", tmp_path / "out")):
        labelled = np.load(mask_path) > 0                            # regions on the object, none on the white
        assert labelled[alpha > 0.5].mean() > 0.9 and not labelled[alpha == 0].any()


def test_classic_stage1_imports_no_segment_anything() -> None:
    """The classic path needs neither segment_anything nor torchvision (seconds of imports without bytecode caches)."""
    code = "import sys; from utils import get_mask; " \
           "print(sorted(m for m in ('segment_anything', 'torchvision') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
