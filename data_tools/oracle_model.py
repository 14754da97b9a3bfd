"""Oracle stage-4 model of a synthetic scene, built from its ground truth (for tests and ablations of stage 5).

    python -m data_tools.oracle_model --scene data/gear/synthetic/cabinet --model_path outputs/.../gear_oracle \
        --canonical_state 0 --num_surfels 20000

Surfels are sampled area-uniformly on the ground-truth part meshes of the canonical state
(`gt/<state>/<state>_static_rotate.ply`, `<state>_dynamic_<i>_rotate.ply`), lie in their triangle's plane, have a
tangent scale of `scale_factor` x the mean sample spacing, opacity 0.99, and the colour of the training pixels that
see them (visibility by the ground-truth depth; grey where no view sees them). Part logits are one-hot (+10 / -10):
part 0 = the static mesh, part i + 1 = `dynamic_i`. The joints are those of `gt/trans.json` turned into canonical ->
other motions. The model is written with `scene.trained_model.save`, i.e. exactly the stage-4 contract.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
import trimesh

from evaluation.meshes import load_mesh
from evaluation.metrics import load_gt_joints
from gaussian_renderer.sh import rgb_to_sh
from scene.articulation import ArticulationModel, joint_start_to_end
from scene.cameras import STATES, Camera
from scene.dataset_readers import load_cameras
from scene.gaussian_model import LOG_THICKNESS, GaussianModel
from scene.trained_model import save
from utils.rotations import matrix_to_quat

LOGIT = 10.0  # one-hot part logits: +LOGIT for the surfel's part, -LOGIT elsewhere
OPACITY = 0.99
GREY = 0.5  # colour of surfels that no training view sees
DEPTH_TOLERANCE = 0.02  # a pixel sees a surfel when their depths differ by less than this (scene units)


def part_meshes(scene_dir: Path, state: int) -> list[trimesh.Trimesh]:
    """Ground-truth meshes of the static body and of each movable part (`dynamic_0`, `dynamic_1`, ...) in `state`."""
    name = STATES[state]
    folder = scene_dir / "gt" / name
    meshes = [load_mesh(folder / f"{name}_static_rotate.ply")]
    while (path := folder / f"{name}_dynamic_{len(meshes) - 1}_rotate.ply").is_file():
        meshes.append(load_mesh(path))
    if len(meshes) < 2:
        raise FileNotFoundError(f"{folder} has no {name}_dynamic_0_rotate.ply: the oracle needs the movable parts")
    return meshes


def sample_surfels(meshes: list[trimesh.Trimesh], count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` area-uniform samples over all `meshes`: points (N, 3), unit face normals (N, 3), part ids (N,)."""
    areas = np.array([mesh.area for mesh in meshes])
    counts = np.maximum(1, np.round(count * areas / areas.sum()).astype(int))
    points, normals, parts = [], [], []
    for part, (mesh, n) in enumerate(zip(meshes, counts)):
        samples, faces = trimesh.sample.sample_surface(mesh, int(n), seed=seed + part)
        points.append(samples)
        normals.append(mesh.face_normals[faces])
        parts.append(np.full(len(samples), part))
    return np.concatenate(points), np.concatenate(normals), np.concatenate(parts)


def normal_frames(normals: np.ndarray) -> np.ndarray:
    """(N, 4) wxyz quaternions of rotations whose third column is the unit normal (the surfel's plane normal)."""
    helper = np.where(np.abs(normals[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    tangent = np.cross(normals, helper)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    rotation = np.stack([tangent, np.cross(normals, tangent), normals], axis=2)
    return matrix_to_quat(torch.from_numpy(rotation)).numpy()


def observed_colours(points: np.ndarray, cameras: list[Camera]) -> np.ndarray:
    """(N, 3) mean colour of the training pixels whose ground-truth depth shows each point; GREY where none does."""
    total, hits = np.zeros((len(points), 3)), np.zeros(len(points))
    for cam in cameras:
        if cam.depth is None or cam.image is None:
            continue
        w2c = cam.world_to_cam.double().numpy()
        cam_pts = points @ w2c[:3, :3].T + w2c[:3, 3]
        z = cam_pts[:, 2]
        safe_z = np.where(z > 1e-6, z, 1.0)
        u = np.floor(cam.fx * cam_pts[:, 0] / safe_z + cam.cx).astype(int)
        v = np.floor(cam.fy * cam_pts[:, 1] / safe_z + cam.cy).astype(int)
        inside = (z > 1e-6) & (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height)
        idx = np.nonzero(inside)[0]
        depth = cam.depth[0].numpy()[v[idx], u[idx]]
        seen = idx[np.abs(depth - z[idx]) < DEPTH_TOLERANCE]
        total[seen] += cam.image.numpy()[:, v[seen], u[seen]].T
        hits[seen] += 1
    colours = np.full((len(points), 3), GREY)
    seen = hits > 0
    colours[seen] = total[seen] / hits[seen, None]
    return colours


def oracle_gaussians(points: np.ndarray, normals: np.ndarray, parts: np.ndarray, colours: np.ndarray,
                     num_parts: int, spacing: float, scale_factor: float) -> GaussianModel:
    """Opaque degree-0 surfels at `points` in the planes of `normals`, with one-hot logits of `parts`."""
    n = len(points)
    to = dict(dtype=torch.float32)
    log_scale = math.log(scale_factor * spacing)
    logits = np.full((n, num_parts), -LOGIT)
    logits[np.arange(n), parts] = LOGIT
    params = {
        "means": torch.tensor(points, **to),
        "scales": torch.tensor([[log_scale, log_scale, LOG_THICKNESS]], **to).repeat(n, 1),
        "quats": torch.tensor(normal_frames(normals), **to),
        "opacities": torch.full((n,), math.log(OPACITY / (1.0 - OPACITY)), **to),
        "sh0": rgb_to_sh(torch.tensor(colours, **to))[:, None, :],
        "shN": torch.zeros(n, 0, 3, **to),
        "features": torch.tensor(logits, **to),
    }
    return GaussianModel(params, sh_degree=0)


def oracle_articulation(scene_dir: Path, canonical_state: int, num_movable: int) -> ArticulationModel:
    """The ground-truth joints of `gt/trans.json` as canonical -> other part motions."""
    joints = load_gt_joints(scene_dir / "gt" / "trans.json")
    if len(joints) != num_movable:
        raise ValueError(f"{scene_dir / 'gt' / 'trans.json'} lists {len(joints)} joints but the ground truth has "
                         f"{num_movable} movable part meshes")
    # start -> end becomes canonical -> other: inverting twice is the identity, so the same helper serves both ways
    joints = [joint_start_to_end(joint, canonical_state) for joint in joints]
    model = ArticulationModel([joint["type"] for joint in joints])
    for k, joint in enumerate(joints, start=1):
        model.set_joint(k, joint["type"], joint["axis_origin"], joint["axis_direction"], joint["motion"])
    return model


def build_oracle_model(scene_dir: str | Path, model_path: str | Path, canonical_state: int = 0,
                       num_surfels: int = 20_000, iteration: int = 30_000, scale_factor: float = 0.8,
                       colour: str = "image", seed: int = 0) -> Path:
    """Write the oracle model of the synthetic scene at `scene_dir` to `model_path`; returns the iteration folder.

    `colour` is "image" (colours of the canonical state's training pixels) or "grey".
    """
    scene_dir = Path(scene_dir)
    if colour not in ("image", "grey"):
        raise ValueError(f"colour must be 'image' or 'grey', got {colour!r}")
    meshes = part_meshes(scene_dir, canonical_state)
    points, normals, parts = sample_surfels(meshes, num_surfels, seed)
    spacing = math.sqrt(sum(mesh.area for mesh in meshes) / len(points))
    if colour == "image":
        colours = observed_colours(points, load_cameras(scene_dir, canonical_state, "train"))
    else:
        colours = np.full((len(points), 3), GREY)
    gaussians = oracle_gaussians(points, normals, parts, colours, len(meshes), spacing, scale_factor)
    articulation = oracle_articulation(scene_dir, canonical_state, len(meshes) - 1)
    return save(model_path, iteration, gaussians, articulation, canonical_state)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write an oracle stage-4 model from a synthetic scene's ground truth.")
    parser.add_argument("--scene", required=True, help="scene folder with gt/ (data/<dataset>/<subset>/<scene>)")
    parser.add_argument("--model_path", required=True)
    parser.add_argument("--canonical_state", type=int, choices=(0, 1), default=0)
    parser.add_argument("--num_surfels", type=int, default=20_000)
    parser.add_argument("--iteration", type=int, default=30_000)
    parser.add_argument("--scale_factor", type=float, default=0.8, help="surfel scale / mean sample spacing")
    parser.add_argument("--colour", choices=("image", "grey"), default="image")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        folder = build_oracle_model(args.scene, args.model_path, args.canonical_state, args.num_surfels,
                                    args.iteration, args.scale_factor, args.colour, args.seed)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"oracle model written to {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
