"""Reader, camera conventions, initial point clouds, and the input checks every stage shares: clear errors naming
the file and frame for bad scenes."""
from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from scene import Scene, derived_point_cloud, initial_point_cloud
from scene.camera_points import random_points_in_views
from scene.contract import mask_path, shipped_point_cloud_path
from scene.dataset_readers import DatasetError, load_cameras, read_rgba, target_size
from utils.point_cloud import voxel_downsample, write_point_ply

FOV = math.radians(40.0)


def look_at_blender(eye: np.ndarray) -> np.ndarray:
    """Camera-to-world (Blender axes: -z looks forward, +y up) for a camera at `eye` looking at the origin."""
    back = eye / np.linalg.norm(eye)
    right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, back, eye
    return c2w


def write_disc_scene(root: Path, size: int = 32, with_depth: bool = True, num_views: int = 4) -> Path:
    """A scene whose object is a sphere of radius 0.5 at the origin, seen from `num_views` cameras per state and split."""
    eyes = [np.array([3.0, 0.0, 0.5]), np.array([0.0, 3.0, 0.5]), np.array([-3.0, 0.0, 1.0]), np.array([0.0, -3.0, -0.5])]
    eyes = eyes if num_views == 4 else [
        3.0 * np.array([np.cos(a) * np.cos(e), np.sin(a) * np.cos(e), np.sin(e)])
        for a, e in zip(np.linspace(0, 2 * np.pi, num_views, endpoint=False), np.tile([0.2, -0.3, 0.7], num_views))
    ]
    f = size / (2 * math.tan(FOV / 2))
    for state in ("start", "end"):
        for split in ("train", "test"):
            frames = []
            for i, eye in enumerate(eyes):
                c2w = look_at_blender(eye)
                w2c = np.linalg.inv(c2w @ np.diag([1, -1, -1, 1]))
                v, u = np.mgrid[0:size, 0:size] + 0.5
                dirs = np.stack([(u - size / 2) / f, (v - size / 2) / f, np.ones_like(u)], -1)
                # ray-sphere intersection in camera coordinates: the sphere centre is w2c @ origin
                centre = w2c[:3, 3]
                b = dirs @ centre
                a = (dirs**2).sum(-1)
                disc = b**2 - a * (centre @ centre - 0.25)
                hit = disc > 0
                t = np.where(hit, (b - np.sqrt(np.maximum(disc, 0))) / a, 0.0)
                rgba = np.zeros((size, size, 4), np.uint8)
                rgba[hit] = (200, 80, 40, 255)
                rel = f"{state}/{split}/rgba/{i:04d}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / rel), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
                if with_depth:
                    depth = np.round(t * 1000).astype(np.uint16)
                    (root / f"{state}/{split}/depth").mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(root / f"{state}/{split}/depth/{i:04d}.png"), depth)
                frames.append({"file_path": rel, "time": 0.0 if state == "start" else 1.0, "transform_matrix": c2w.tolist()})
            meta = {"camera_angle_x": FOV, "camera_angle_y": FOV, "frames": frames}
            (root / f"transforms_{split}_{state}.json").write_text(json.dumps(meta))
    return root


@pytest.fixture()
def disc_scene(tmp_path: Path) -> Path:
    return write_disc_scene(tmp_path / "scene")


def test_cameras_project_origin_to_image_centre(disc_scene: Path) -> None:
    cams = load_cameras(disc_scene, 0, "train")
    assert len(cams) == 4
    for cam in cams:
        p = cam.world_to_cam[:3, 3]  # origin in camera coordinates
        assert p[2] > 0, "the object must be in front of the camera (OpenCV z forward)"
        u, v = cam.fx * p[0] / p[2] + cam.cx, cam.fy * p[1] / p[2] + cam.cy
        assert abs(u - 16) < 1e-4 and abs(v - 16) < 1e-4
        assert cam.image.shape == (3, 32, 32) and cam.alpha.shape == (1, 32, 32) and cam.depth.shape == (1, 32, 32)
        assert torch.allclose(cam.camera_center.norm(), torch.linalg.norm(torch.tensor([3.0, 0.0, 0.5])), atol=0.2)


def test_camera_up_is_world_up(disc_scene: Path) -> None:
    """A camera level with the object has image 'up' (-y in OpenCV) along world +z."""
    cam = load_cameras(disc_scene, 0, "train")[0]
    up_world = cam.cam_to_world[:3, :3] @ torch.tensor([0.0, -1.0, 0.0])
    assert up_world[2] > 0.9


def test_resolution_option(disc_scene: Path) -> None:
    assert target_size(400, 300, -1) == (400, 300)
    assert target_size(400, 300, 2) == (200, 150)
    assert target_size(400, 300, 100) == (100, 75)
    cam = load_cameras(disc_scene, 1, "test", resolution=2)[0]
    assert (cam.width, cam.height) == (16, 16) and cam.image.shape == (3, 16, 16) and cam.depth.shape == (1, 16, 16)
    assert abs(cam.fx - load_cameras(disc_scene, 1, "test")[0].fx / 2) < 1e-6


def test_point_cloud_from_depth_lies_on_the_sphere(disc_scene: Path) -> None:
    cams = load_cameras(disc_scene, 0, "train")
    pts, cols, source = derived_point_cloud(cams, voxel_size=0.02)
    assert len(pts) > 50 and source == "depth"
    radius = np.linalg.norm(pts, axis=1)
    assert np.median(np.abs(radius - 0.5)) < 0.01
    assert np.allclose(cols.mean(0), np.array([200, 80, 40]) / 255, atol=0.02)


def test_point_cloud_without_depth_uses_the_visual_hull(tmp_path: Path) -> None:
    root = write_disc_scene(tmp_path / "nodepth", with_depth=False, num_views=12)
    cams = load_cameras(root, 0, "train")
    assert all(c.depth is None for c in cams)
    pts, _, source = derived_point_cloud(cams, voxel_size=0.02)
    assert source.startswith("visual hull")
    radius = np.linalg.norm(pts, axis=1)
    assert len(pts) > 100 and np.quantile(radius, 0.95) < 0.75  # inside the 12-view hull of the sphere


def test_random_points_lie_where_half_of_the_views_look(tmp_path: Path) -> None:
    """--no-init_from_pcd's sampler: the requested count, each point in front of and inside at least half of the
    frames, spread through the look-at box (not only on the object), random colours, the same for the same seed."""
    cams = load_cameras(write_disc_scene(tmp_path / "scene", num_views=12), 0, "train")
    pts, cols = random_points_in_views(cams, 3000, seed=3)
    assert pts.shape == (3000, 3) and cols.shape == (3000, 3) and 0.0 <= cols.min() and cols.max() <= 1.0
    seen = np.zeros(len(pts))
    for cam in cams:
        w2c = cam.world_to_cam.numpy()
        local = pts @ w2c[:3, :3].T + w2c[:3, 3]
        u = local[:, 0] / local[:, 2] * cam.fx + cam.cx
        v = local[:, 1] / local[:, 2] * cam.fy + cam.cy
        seen += (local[:, 2] > 0) & (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height)
    assert (seen >= 6).all()
    radius = np.linalg.norm(pts, axis=1)
    assert np.quantile(radius, 0.9) > 0.8 and radius.max() < 1.5 * np.sqrt(3)  # the cube of half-side 1.5 at the origin
    again, _ = random_points_in_views(cams, 3000, seed=3)
    assert np.array_equal(pts, again) and not np.array_equal(pts, random_points_in_views(cams, 3000, seed=4)[0])
    with pytest.raises(ValueError, match="positive"):
        random_points_in_views(cams, 0)


@pytest.mark.parametrize("shape, dtype", [((5, 7, 4), np.uint8), ((5, 7, 3), np.uint8), ((5, 7), np.uint16),
                                          ((5, 7, 4), np.uint16)])
def test_read_rgba_scales_and_orders_channels(tmp_path: Path, shape: tuple, dtype: type) -> None:
    """RGB in [0, 1] from OpenCV's BGR(A) order, 8 or 16 bits; alpha from the fourth channel. An image without
    alpha is refused, or with white_background keyed: 1 where it is not white."""
    raw = np.random.default_rng(0).integers(0, np.iinfo(dtype).max + 1, size=shape, dtype=dtype)
    cv2.imwrite(str(tmp_path / "image.png"), raw)
    has_alpha = raw.ndim == 3 and shape[-1] == 4
    if not has_alpha:
        with pytest.raises(DatasetError, match="image.png has no alpha channel.*--white_background"):
            read_rgba(tmp_path / "image.png")
    rgb, alpha = read_rgba(tmp_path / "image.png", white_background=True)
    scaled = raw.astype(np.float32) / np.float32(np.iinfo(dtype).max)
    expected = np.repeat(scaled[..., None], 3, axis=2) if raw.ndim == 2 else scaled[..., 2::-1]
    assert rgb.dtype == alpha.dtype == np.float32 and rgb.flags.c_contiguous
    assert np.array_equal(rgb, expected)
    keyed = (expected.min(axis=2) < 1.0 - 2.0 / 255.0).astype(np.float32)
    assert np.array_equal(alpha, scaled[..., 3] if has_alpha else keyed)


def test_white_background_keys_the_alpha_of_rgb_images(disc_scene: Path) -> None:
    """The same scene saved as RGB over white: refused without --white_background (naming the file and frame),
    and with it its alpha matches the RGBA one where the object is not white."""
    reference = load_cameras(disc_scene, 0, "train")
    for path in sorted((disc_scene / "start" / "train" / "rgba").glob("*.png")):
        rgba = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        alpha = rgba[..., 3:].astype(np.float32) / 255.0
        cv2.imwrite(str(path), np.round(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8))
    with pytest.raises(DatasetError, match=r"transforms_train_start.json: frame 0: image .*0000.png has no alpha"):
        load_cameras(disc_scene, 0, "train")
    keyed = load_cameras(disc_scene, 0, "train", white_background=True)
    for cam, ref in zip(keyed, reference):
        assert torch.equal(cam.alpha, ref.alpha)


def test_scene_container_writes_nothing(disc_scene: Path) -> None:
    before = sorted(disc_scene.rglob("*"))
    scene = Scene(disc_scene)
    assert len(scene.train_cameras(0)) == 4 and len(scene.test_cameras(1)) == 4
    assert scene.extent > 3.0
    start = initial_point_cloud(scene, 0, voxel_size=0.02)
    assert start.source == "depth" and not start.shipped and len(start.points) > 50
    assert sorted(disc_scene.rglob("*")) == before                 # the data folder is input only


def test_a_shipped_point_cloud_is_read_and_checked(disc_scene: Path) -> None:
    scene = Scene(disc_scene)
    path = shipped_point_cloud_path(disc_scene, 1)
    write_point_ply(path, np.array([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0]], np.float32), np.zeros((2, 3), np.float32))
    start = initial_point_cloud(scene, 1, voxel_size=0.02)
    assert start.source == str(path) and start.shipped and len(start.points) == 2
    write_point_ply(path, np.array([[0.0, np.nan, 0.0], [0.1, 0.0, 0.0]], np.float32), np.zeros((2, 3), np.float32))
    with pytest.raises(DatasetError, match=f"point cloud {path} contains NaN"):
        initial_point_cloud(scene, 1, voxel_size=0.02)


def test_voxel_downsample_averages() -> None:
    pts = np.array([[0.01, 0.01, 0.01], [0.03, 0.03, 0.03], [0.5, 0.5, 0.5]], np.float32)
    cols = np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0]], np.float32)
    p, c = voxel_downsample(pts, cols, 0.1)
    assert len(p) == 2
    order = np.argsort(p[:, 0])
    assert np.allclose(p[order[0]], [0.02] * 3) and np.allclose(c[order[0]], [0.5, 0, 0.5])


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_cameras(tmp_path / "nope", 0, "train")


def test_missing_transforms(disc_scene: Path) -> None:
    (disc_scene / "transforms_train_end.json").unlink()
    with pytest.raises(FileNotFoundError, match="transforms_train_end.json"):
        load_cameras(disc_scene, 1, "train")


def test_malformed_transforms(disc_scene: Path) -> None:
    (disc_scene / "transforms_test_start.json").write_text('{"frames": []}')
    with pytest.raises(DatasetError, match="camera_angle_x"):
        load_cameras(disc_scene, 0, "test")


def test_missing_image(disc_scene: Path) -> None:
    (disc_scene / "start/train/rgba/0002.png").unlink()
    with pytest.raises(DatasetError, match="0002.png is missing"):
        load_cameras(disc_scene, 0, "train")


def test_mixed_image_sizes(disc_scene: Path) -> None:
    cv2.imwrite(str(disc_scene / "start/train/rgba/0001.png"), np.zeros((20, 20, 4), np.uint8))
    with pytest.raises(DatasetError, match="0001.png has size 20x20"):
        load_cameras(disc_scene, 0, "train")


def test_depth_of_wrong_size(disc_scene: Path) -> None:
    cv2.imwrite(str(disc_scene / "end/train/depth/0003.png"), np.zeros((16, 16), np.uint16))
    with pytest.raises(DatasetError, match="depth image .*0003.png has size 16x16"):
        load_cameras(disc_scene, 1, "train")


def test_depth_not_16_bit(disc_scene: Path) -> None:
    cv2.imwrite(str(disc_scene / "end/train/depth/0000.png"), np.zeros((32, 32), np.uint8))
    with pytest.raises(DatasetError, match="16-bit"):
        load_cameras(disc_scene, 1, "train")


def test_masks_are_loaded_and_checked(disc_scene: Path, tmp_path: Path) -> None:
    masks = tmp_path / "out" / "masks"
    first = mask_path(masks, 0, "train", "0000")
    first.parent.mkdir(parents=True)
    np.save(first, np.arange(32 * 32, dtype=np.int32).reshape(32, 32))
    assert load_cameras(disc_scene, 0, "train")[0].mask is None    # masks only from stage 1's folder
    cams = load_cameras(disc_scene, 0, "train", mask_dir=masks)
    assert cams[0].mask.dtype == torch.int32 and cams[0].mask[1, 0] == 32 and cams[1].mask is None
    np.save(mask_path(masks, 0, "train", "0001"), np.zeros((8, 8), np.int32))
    with pytest.raises(DatasetError, match="mask .*0001.npy has size 8x8"):
        load_cameras(disc_scene, 0, "train", mask_dir=masks)
    np.save(mask_path(masks, 0, "train", "0001"), np.zeros((32, 32), np.int32))
    mask_path(masks, 0, "train", "0002").write_bytes(b"\x93NUMPY broken")
    with pytest.raises(DatasetError, match="cannot read mask .*0002.npy"):
        load_cameras(disc_scene, 0, "train", mask_dir=masks)


def test_scene_without_foreground(disc_scene: Path) -> None:
    for p in (disc_scene / "start/train/rgba").glob("*.png"):
        cv2.imwrite(str(p), np.zeros((32, 32, 4), np.uint8))
    with pytest.raises(DatasetError, match="no foreground"):
        Scene(disc_scene)


@pytest.mark.parametrize("floater", [False, True])
def test_voxel_downsample_matches_a_per_voxel_mean_in_voxel_order(floater: bool) -> None:
    """Every occupied voxel once, in lexicographic order of its indices, holding its points' mean (and colours'); with
    a floater 10^19 voxels away (no single sort key fits) the same through the row-wise fallback."""
    rng = np.random.default_rng(0)
    pts = rng.uniform(-1.0, 1.0, (5000, 3)).astype(np.float32)
    if floater:
        pts[0] = [1e17, -1e17, 1e17]
    cols = rng.uniform(0.0, 1.0, (5000, 3)).astype(np.float32)
    p, c = voxel_downsample(pts, cols, 0.25)
    keys = np.floor(pts / 0.25).astype(np.int64)
    voxels = sorted({tuple(k) for k in keys})
    assert len(p) == len(voxels)
    for i in (0, len(voxels) // 2, len(voxels) - 1):
        members = np.all(keys == voxels[i], axis=1)
        np.testing.assert_allclose(p[i], pts[members].mean(axis=0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c[i], cols[members].mean(axis=0), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------- the shared input checks
def edit_frames(scene: Path, name: str, change) -> None:
    """Apply `change(meta)` to the transforms file `name` of `scene`."""
    path = scene / name
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_nan_pose_names_the_file_and_frame(disc_scene: Path, split: str) -> None:
    edit_frames(disc_scene, f"transforms_{split}_end.json",
                lambda meta: meta["frames"][2]["transform_matrix"][0].__setitem__(3, float("nan")))
    with pytest.raises(DatasetError, match=rf"transforms_{split}_end.json: frame 2 'transform_matrix' holds NaN"):
        load_cameras(disc_scene, 1, split)


def test_a_non_rigid_pose_and_a_bad_field_of_view_are_refused(disc_scene: Path) -> None:
    edit_frames(disc_scene, "transforms_train_start.json",
                lambda meta: meta["frames"][1]["transform_matrix"][0].__setitem__(0, 2.0))
    with pytest.raises(DatasetError, match="frame 1 'transform_matrix' is not a rigid camera pose"):
        load_cameras(disc_scene, 0, "train")
    edit_frames(disc_scene, "transforms_test_start.json", lambda meta: meta.__setitem__("camera_angle_x", "nan"))
    with pytest.raises(DatasetError, match="transforms_test_start.json: 'camera_angle_x' must be a field of view"):
        load_cameras(disc_scene, 0, "test")
    edit_frames(disc_scene, "transforms_test_end.json", lambda meta: meta.__setitem__("camera_angle_y", float("inf")))
    with pytest.raises(DatasetError, match="'camera_angle_y' must be a field of view"):
        load_cameras(disc_scene, 1, "test")


@pytest.mark.parametrize("file_path", ["../outside/0000.png", "start/train/../../../outside/0000.png",
                                       "/etc/hostname"])
def test_file_paths_outside_the_scene_folder_are_refused(disc_scene: Path, file_path: str) -> None:
    outside = disc_scene.parent / "outside"
    outside.mkdir(exist_ok=True)
    shutil.copy(disc_scene / "start/train/rgba/0000.png", outside / "0000.png")
    edit_frames(disc_scene, "transforms_train_start.json",
                lambda meta: meta["frames"][3].__setitem__("file_path", file_path))
    with pytest.raises(DatasetError, match="frame 3 'file_path' .* points outside the scene folder"):
        load_cameras(disc_scene, 0, "train")


def test_a_linked_image_folder_inside_the_scene_is_followed(disc_scene: Path, tmp_path: Path) -> None:
    """A dataset may link its image folders elsewhere: the path is checked as written, not where a link points."""
    shutil.move(disc_scene / "start", tmp_path / "elsewhere")
    (disc_scene / "start").symlink_to(tmp_path / "elsewhere")
    assert len(load_cameras(disc_scene, 0, "train")) == 4


def test_duplicate_image_names_are_refused(disc_scene: Path) -> None:
    def duplicate(meta: dict) -> None:
        meta["frames"][1]["file_path"] = meta["frames"][0]["file_path"]
    edit_frames(disc_scene, "transforms_train_end.json", duplicate)
    with pytest.raises(DatasetError, match="frames 0 and 1 have the same image name '0000'"):
        load_cameras(disc_scene, 1, "train")


def test_depth_of_some_frames_missing_is_a_warning_naming_them(disc_scene: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    (disc_scene / "end/train/depth/0001.png").unlink()
    with caplog.at_level(logging.WARNING):
        cams = load_cameras(disc_scene, 1, "train")
    assert "1 of 4 frames have no depth map" in caplog.text and "0001.png" in caplog.text
    assert [cam.depth is None for cam in cams] == [False, True, False, False]
    caplog.clear()
    for path in (disc_scene / "end/train/depth").glob("*.png"):
        path.unlink()
    assert all(cam.depth is None for cam in load_cameras(disc_scene, 1, "train")) and not caplog.text


@pytest.mark.parametrize("resolution, message", [(3, "at least 16"), (0, "at least 16"), (-2, "at least 16"),
                                                 (64, "wider than the images"), (8, "below 16 pixels")])
def test_unreasonable_resolutions_are_refused(disc_scene: Path, resolution: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_cameras(disc_scene, 0, "train", resolution=resolution)
    assert target_size(32, 32, 16) == (16, 16) and target_size(32, 32, 2) == (16, 16)
