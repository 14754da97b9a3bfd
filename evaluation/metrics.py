"""Evaluation metrics of articulated-object reconstruction (protocol of PARIS / ArtGS / GEAR).

This module is the only place metrics live:
- joints: axis angle error (deg), axis position error (distance between the axis lines, revolute only),
  part motion error (revolute: geodesic angle of R_pred R_gt^T in deg; prismatic: |t_pred - t_gt| in scene units),
  with predicted parts matched to ground-truth parts by the best assignment among same-type pairs;
- meshes: Chamfer distance (area-weighted surface samples, mean squared nearest-neighbour distance both ways,
  summed, x1000) of static part, each movable part and whole object, per state and averaged;
- part assignment: the share of opaque surfels whose part is that of the nearest ground-truth part surface;
- images: PSNR and SSIM;
- `summarise` / `write_result_csv`: the `metrics.json` dict and a one-row `result.csv`.

A joint is a dict `{"type": "revolute"|"prismatic", "axis_origin": (3,), "axis_direction": (3,), "motion": deg|m}`
(the entries of `eval/joint_info.json`) that moves its part from the start state to the end state:
revolute x -> R(d, motion)(x - o) + o, prismatic x -> x + motion * d.
"""
from __future__ import annotations

import csv
import io
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import trimesh
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from evaluation.meshes import load_mesh
from utils.image_utils import psnr as image_psnr
from utils.io_utils import atomic_path, read_json
from utils.loss_utils import ssim as ssim_loss
from utils.neighbours import query

JOINT_TYPES = ("revolute", "prismatic")
_GT_TYPES = {"rotate": "revolute", "translate": "prismatic"}
STATES = ("start", "end")
AXIS_POS_DISPLAY_SCALE = 10.0  # the papers print axis position error x10
HEADLINE_KEYS = ("axis_ang", "axis_pos", "motion_revolute_deg", "motion_prismatic_m", "cd_static", "cd_movable",
                 "cd_whole", "part_accuracy", "psnr")  # the summary numbers the logs print


@dataclass(frozen=True)
class Joint:
    """A validated joint: unit direction, origin and motion (degrees for revolute, scene units for prismatic)."""

    type: str
    origin: np.ndarray
    direction: np.ndarray
    motion: float

    def rotation(self) -> Rotation:
        """Rotation applied by the joint (identity for a prismatic joint)."""
        if self.type == "prismatic":
            return Rotation.identity()
        return Rotation.from_rotvec(self.direction * math.radians(self.motion))

    def translation(self) -> np.ndarray:
        """(3,) translation along the axis (zero for a revolute joint)."""
        if self.type == "revolute":
            return np.zeros(3)
        return self.motion * self.direction


def _vector3(value: Any, what: str) -> np.ndarray:
    """A finite (3,) float vector, or a ValueError naming `what`."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} must be 3 numbers, got {value!r}") from err
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} must be 3 finite numbers, got {value!r}")
    return arr


def _unit(vector: np.ndarray, what: str) -> np.ndarray:
    """`vector` normalised; a zero vector is an error naming `what`."""
    norm = float(np.linalg.norm(vector))
    if norm < 1e-12:
        raise ValueError(f"{what} is a zero vector")
    return vector / norm


def as_joint(joint: Mapping[str, Any] | Joint, what: str = "joint") -> Joint:
    """Validate a joint dict (see module docstring) and return it as a `Joint` with a unit direction."""
    if isinstance(joint, Joint):
        return joint
    if not isinstance(joint, Mapping):
        raise ValueError(f"{what} must be a dict, got {joint!r}")
    missing = {"type", "axis_origin", "axis_direction", "motion"} - set(joint)
    if missing:
        raise ValueError(f"{what} lacks {sorted(missing)}: {dict(joint)!r}")
    if joint["type"] not in JOINT_TYPES:
        raise ValueError(f"{what} has type {joint['type']!r}; expected one of {JOINT_TYPES}")
    try:
        motion = float(joint["motion"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} has a non-numeric motion {joint['motion']!r}") from err
    if not math.isfinite(motion):
        raise ValueError(f"{what} has a non-finite motion {joint['motion']!r}")
    direction = _vector3(joint["axis_direction"], f"{what} axis_direction")
    return Joint(joint["type"], _vector3(joint["axis_origin"], f"{what} axis_origin"),
                 _unit(direction, f"{what} axis_direction"), motion)


def _gt_entry_to_joint(entry: Any, where: str) -> dict:
    """One `trans_info` entry of gt/trans.json as a joint dict (motion = r - l)."""
    if not isinstance(entry, dict) or entry.get("type") not in _GT_TYPES:
        raise ValueError(f"{where}: expected a dict with type 'rotate' or 'translate', got {entry!r}")
    kind = entry["type"]
    try:
        axis, limits = entry["axis"], entry[kind]
        origin = _vector3(axis["o"], f"{where} axis.o")
        direction = _vector3(axis["d"], f"{where} axis.d")
        motion = float(limits["r"]) - float(limits["l"])
    except (KeyError, TypeError) as err:
        raise ValueError(f"{where}: needs axis.o, axis.d and {kind}.l/{kind}.r ({err!r})") from err
    norm = float(np.linalg.norm(direction))
    if norm < 1e-12:
        raise ValueError(f"{where}: axis.d is a zero vector")
    if kind == "translate":
        motion *= norm  # x -> x + (r - l) d moves by (r - l)|d| along the unit direction
    return {"type": _GT_TYPES[kind], "axis_origin": origin.tolist(),
            "axis_direction": (direction / norm).tolist(), "motion": motion}


def load_gt_joints(path: str | os.PathLike) -> list[dict]:
    """Read gt/trans.json into joint dicts (start -> end; rotate -> revolute in deg, translate -> prismatic).

    `trans_info` may be a list of joints or a single dict; a file that is a bare list/dict of joints is accepted too.
    """
    data = read_json(path, "ground-truth joint file")
    info = data.get("trans_info", data) if isinstance(data, dict) else data
    entries = [info] if isinstance(info, dict) else info
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"ground-truth joint file {path}: 'trans_info' must be a non-empty list or a dict")
    return [_gt_entry_to_joint(entry, f"ground-truth joint file {path}, joint {i}") for i, entry in enumerate(entries)]


def axis_angle_error(d_pred: Sequence[float], d_gt: Sequence[float]) -> float:
    """Angle between two axis directions in degrees, min(theta, 180 - theta) (an axis has no sign)."""
    a = _unit(_vector3(d_pred, "predicted direction"), "predicted direction")
    b = _unit(_vector3(d_gt, "ground-truth direction"), "ground-truth direction")
    return math.degrees(math.atan2(np.linalg.norm(np.cross(a, b)), abs(float(a @ b))))


def axis_position_error(o_pred: Sequence[float], d_pred: Sequence[float],
                        o_gt: Sequence[float], d_gt: Sequence[float], parallel_tol: float = 1e-6) -> float:
    """Distance between the predicted and ground-truth axis lines (scene units).

    Lines whose directions' cross product is below `parallel_tol` are treated as parallel.
    """
    a = _unit(_vector3(d_pred, "predicted direction"), "predicted direction")
    b = _unit(_vector3(d_gt, "ground-truth direction"), "ground-truth direction")
    offset = _vector3(o_gt, "ground-truth origin") - _vector3(o_pred, "predicted origin")
    normal = np.cross(a, b)
    normal_norm = float(np.linalg.norm(normal))
    if normal_norm < parallel_tol:
        return float(np.linalg.norm(np.cross(offset, b)))
    return abs(float(offset @ normal)) / normal_norm


def axis_offset_error(o_pred: Sequence[float], d_pred: Sequence[float], o_gt: Sequence[float]) -> float:
    """Distance (scene units) from the ground-truth axis origin to the predicted axis line.

    A supplement to `axis_position_error`, which measures two nearly parallel lines along their common normal and
    so reads almost 0 for axes a few centimetres apart but parallel within a fraction of a degree.
    """
    d = _unit(_vector3(d_pred, "predicted direction"), "predicted direction")
    offset = _vector3(o_gt, "ground-truth origin") - _vector3(o_pred, "predicted origin")
    return float(np.linalg.norm(np.cross(offset, d)))


def motion_error(pred: Mapping[str, Any] | Joint, gt: Mapping[str, Any] | Joint) -> float:
    """Part motion error, in the ground truth's unit.

    Revolute GT: geodesic angle of R_pred R_gt^T in degrees; prismatic GT: |t_pred - t_gt| in scene units.
    A predicted joint of the other type counts as identity rotation (prismatic) or zero translation (revolute),
    so a wrong type is penalised by the whole GT motion rather than skipped.
    """
    p, g = as_joint(pred, "predicted joint"), as_joint(gt, "ground-truth joint")
    if g.type == "revolute":
        return math.degrees((p.rotation() * g.rotation().inv()).magnitude())
    return float(np.linalg.norm(p.translation() - g.translation()))


def _pair_cost(p: Joint, g: Joint) -> float:
    """Sum of joint errors each mapped into [0, 1), used to rank assignments of predicted to GT parts."""
    cost = axis_angle_error(p.direction, g.direction) / 90.0
    err = motion_error(p, g)
    if g.type == "revolute":
        cost += err / 180.0
    else:
        cost += err / (np.linalg.norm(p.translation()) + np.linalg.norm(g.translation()) + 1e-12)
    if p.type == g.type == "revolute":
        pos = axis_position_error(p.origin, p.direction, g.origin, g.direction)
        cost += pos / (1.0 + pos)
    return cost


def match_parts(pred_joints: Sequence[Mapping[str, Any]], gt_joints: Sequence[Mapping[str, Any]],
                pred_centers: np.ndarray | None = None, gt_centers: np.ndarray | None = None) -> list[int]:
    """Match predicted parts to GT parts; returns, for each GT joint, the index of its predicted joint or -1.

    As many pairs as possible are made (min of the two counts). Among those assignments, the one with the most
    same-type pairs wins (a type mismatch is never preferred over a same-type match); ties are broken by the
    smallest sum of normalised joint errors. Optional part centres `(K, 3)` (e.g. mesh centroids in the start
    state) add their distance to the cost, which separates parts with identical joints (e.g. drawers).
    """
    preds = [as_joint(j, f"predicted joint {i}") for i, j in enumerate(pred_joints)]
    gts = [as_joint(j, f"ground-truth joint {i}") for i, j in enumerate(gt_joints)]
    if not preds or not gts:
        return [-1] * len(gts)
    errors = np.array([[_pair_cost(p, g) for p in preds] for g in gts])
    if pred_centers is not None and gt_centers is not None:
        dist = np.linalg.norm(np.asarray(gt_centers, float)[:, None] - np.asarray(pred_centers, float)[None], axis=-1)
        errors += dist / (1.0 + dist)
    mismatch = np.array([[float(p.type != g.type) for p in preds] for g in gts])
    # one mismatch outweighs any possible sum of errors, so the assignment is lexicographic (mismatches, errors)
    rows, cols = linear_sum_assignment(mismatch * (errors.sum() + 1.0) + errors)
    match = [-1] * len(gts)
    for r, c in zip(rows, cols):
        match[r] = int(c)
    return match


def mesh_part_pairs(matched: Sequence[int], pred_joints: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """GT part mesh name -> predicted part mesh name for `evaluate_meshes`, from `match_parts`' result.

    GT joint i owns mesh `part_{i+1}`; predicted joint j owns `part_{k}` with k its `part` entry (default j + 1).
    """
    return {f"part_{i + 1}": f"part_{int(pred_joints[j].get('part', j + 1))}" for i, j in enumerate(matched) if j >= 0}


def _mean(values: Sequence[float | None]) -> float | None:
    """Mean of the values, or None when there are none."""
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _joint_pair_errors(p: Joint, g: Joint) -> dict:
    """Per-part joint errors of one matched pair."""
    revolute = p.type == g.type == "revolute"
    axis_pos = axis_position_error(p.origin, p.direction, g.origin, g.direction) if revolute else None
    return {"type_pred": p.type, "type_correct": p.type == g.type,
            "axis_ang": axis_angle_error(p.direction, g.direction), "axis_pos": axis_pos,
            "axis_pos_x10": None if axis_pos is None else axis_pos * AXIS_POS_DISPLAY_SCALE,
            "axis_offset": axis_offset_error(p.origin, p.direction, g.origin) if revolute else None,
            "motion": motion_error(p, g)}


def evaluate_joints(pred_joints: Sequence[Mapping[str, Any]], gt_joints: Sequence[Mapping[str, Any]],
                    pred_centers: np.ndarray | None = None, gt_centers: np.ndarray | None = None) -> dict:
    """Joint errors per GT part and their means.

    Returns `{"matched": [pred index or -1 per GT joint], "unmatched_pred": [...], "type_correct": [...],
    "parts": [per-GT-part dict], "mean": {...}}`. Means run over matched parts: `axis_ang` (deg), `axis_pos`,
    `axis_pos_x10` and the supplementary `axis_offset` (both-revolute pairs), `motion_revolute_deg` and
    `motion_prismatic_m` (by GT type); `type_accuracy` counts an unmatched GT part as wrong. A motion error is in the
    GT type's unit (`motion_unit`).
    """
    preds = [as_joint(j, f"predicted joint {i}") for i, j in enumerate(pred_joints)]
    gts = [as_joint(j, f"ground-truth joint {i}") for i, j in enumerate(gt_joints)]
    match = match_parts(preds, gts, pred_centers, gt_centers)
    parts = []
    for i, (g, j) in enumerate(zip(gts, match)):
        part = {"gt_index": i, "pred_index": j if j >= 0 else None, "type_gt": g.type,
                "motion_unit": "deg" if g.type == "revolute" else "m"}
        if j >= 0:
            part.update(_joint_pair_errors(preds[j], g))
        else:
            part.update(type_pred=None, type_correct=False, axis_ang=None, axis_pos=None, axis_pos_x10=None,
                        axis_offset=None, motion=None)
        parts.append(part)
    axis_pos = _mean([p["axis_pos"] for p in parts])
    mean = {"axis_ang": _mean([p["axis_ang"] for p in parts]), "axis_pos": axis_pos,
            "axis_pos_x10": None if axis_pos is None else axis_pos * AXIS_POS_DISPLAY_SCALE,
            "axis_offset": _mean([p["axis_offset"] for p in parts]),
            "motion_revolute_deg": _mean([p["motion"] for p in parts if p["type_gt"] == "revolute"]),
            "motion_prismatic_m": _mean([p["motion"] for p in parts if p["type_gt"] == "prismatic"]),
            "type_accuracy": float(np.mean([p["type_correct"] for p in parts]))}
    return {"matched": match, "unmatched_pred": sorted(set(range(len(preds))) - set(match)),
            "type_correct": [p["type_correct"] for p in parts], "parts": parts, "mean": mean}


def chamfer_distance(mesh_a: trimesh.Trimesh, mesh_b: trimesh.Trimesh, n_samples: int = 10000,
                     seed: int = 0) -> float | None:
    """Chamfer distance x1000 between two surfaces: `n_samples` area-weighted samples per mesh, mean squared
    nearest-neighbour distance from a to b plus from b to a.

    Returns None when either mesh has no surface (no faces or zero area), so a missing mesh reads `null` in
    metrics.json instead of a number.
    """
    if any(len(m.faces) == 0 or m.area <= 0.0 for m in (mesh_a, mesh_b)):
        return None
    pts_a = trimesh.sample.sample_surface(mesh_a, n_samples, seed=seed)[0]
    pts_b = trimesh.sample.sample_surface(mesh_b, n_samples, seed=seed + 1)[0]
    d_ab = query(cKDTree(pts_b), pts_a)[0]
    d_ba = query(cKDTree(pts_a), pts_b)[0]
    return float((np.mean(d_ab ** 2) + np.mean(d_ba ** 2)) * 1000.0)


def load_gt_meshes(gt_dir: str | os.PathLike) -> dict[str, trimesh.Trimesh]:
    """Ground-truth meshes of gt/{start,end}/ keyed like the predicted meshes: `{state}_{whole|static|part_k}`.

    `{state}_dynamic_{i}_rotate.ply` (GT joint i) becomes `part_{i+1}`; PARIS's single `{state}_dynamic_rotate.ply`
    becomes `part_1`. Missing files are absent from the dict; an unreadable or empty mesh file is an error.
    """
    if not Path(gt_dir).is_dir():
        raise FileNotFoundError(f"ground-truth folder not found: {gt_dir}")
    pattern = re.compile(r"^(start|end)(?:_(static|dynamic)(?:_(\d+))?)?_rotate\.ply$")
    meshes = {}
    for state in STATES:
        for path in sorted((Path(gt_dir) / state).glob(f"{state}_*rotate.ply")):
            found = pattern.match(path.name)
            if found is None or found.group(1) != state or (found.group(2) == "static" and found.group(3)):
                continue
            kind, index = found.group(2), found.group(3)
            if kind is None:
                name = "whole"
            elif kind == "static":
                name = "static"
            else:
                name = f"part_{int(index or 0) + 1}"
            meshes[f"{state}_{name}"] = load_mesh(path)
    return meshes


def _state_entry(values: dict[str, float | None]) -> dict[str, float | None]:
    """Per-state values plus their mean (None when any state is missing: a failure never improves a mean)."""
    present = list(values.values())
    mean = None if not present or any(v is None for v in present) else float(np.mean(present))
    return {**values, "mean": mean}


def evaluate_meshes(pred: Mapping[str, trimesh.Trimesh | None], gt: Mapping[str, trimesh.Trimesh],
                    part_pairs: Mapping[str, str] | None = None, n_samples: int = 10000, seed: int = 0) -> dict:
    """Chamfer distances (x1000) of every GT mesh against its prediction, per state and averaged.

    Both dicts are keyed `{state}_{name}` with name `whole`, `static` or `part_k` (see `load_gt_meshes`).
    `part_pairs` maps a GT part name to the matched predicted part name (e.g. from `match_parts`); identity
    by default. A missing or empty predicted mesh gives None, and every mean that includes it is None.
    Returns `{name: {"start", "end", "mean"}}` for each GT name, plus `"movable"`: the mean over movable parts.
    """
    part_pairs = dict(part_pairs or {})
    names = sorted({key.split("_", 1)[1] for key in gt})
    result = {}
    for name in names:
        pred_name = part_pairs.get(name, name)
        per_state = {}
        for state in STATES:
            gt_mesh = gt.get(f"{state}_{name}")
            if gt_mesh is None:
                continue
            pred_mesh = pred.get(f"{state}_{pred_name}")
            per_state[state] = None if pred_mesh is None else chamfer_distance(pred_mesh, gt_mesh, n_samples, seed)
        result[name] = _state_entry(per_state)
    movable = [result[n] for n in names if n.startswith("part_")]
    if movable:
        states = [s for s in STATES if all(s in entry for entry in movable)]
        result["movable"] = _state_entry({s: None if any(e[s] is None for e in movable)
                                          else float(np.mean([e[s] for e in movable])) for s in states})
    return result


PART_SAMPLE_SPACING = 0.003  # about how far apart part labels sample the ground-truth part surfaces (scene units)
MAX_PART_SAMPLES = 1_000_000  # per mesh


def evaluate_part_labels(points: np.ndarray, labels: np.ndarray, gt: Mapping[str, trimesh.Trimesh], state: str,
                         part_pairs: Mapping[str, str] | None = None, seed: int = 0) -> dict | None:
    """Part-assignment accuracy: the share of `points` (N, 3) (the opaque surfels' centres in `state`) whose
    predicted part `labels` (N,) (0 static, k movable part k) is the part of the nearest ground-truth part surface
    (`{state}_static`, `{state}_part_i`; GT part i counts as the predicted part `part_pairs` matches it to, e.g. from
    `mesh_part_pairs`; with `part_pairs` None as predicted part i, and unmatched as no part), and per ground-truth
    part the share of the surfels nearest to it that carry its label. The surfaces are sampled area-weighted about
    PART_SAMPLE_SPACING apart. None without points or without a static and a part mesh for `state`.
    """
    names = sorted(key.split("_", 1)[1] for key, mesh in gt.items()
                   if key.startswith(f"{state}_") and key != f"{state}_whole" and len(mesh.faces) and mesh.area > 0)
    if "static" not in names or len(names) < 2 or len(points) == 0:
        return None
    if len(labels) != len(points):
        raise ValueError(f"part labels: {len(labels)} labels for {len(points)} points")
    samples, owners = [], []
    for index, name in enumerate(names):
        mesh = gt[f"{state}_{name}"]
        count = int(min(MAX_PART_SAMPLES, max(1, math.ceil(mesh.area / PART_SAMPLE_SPACING**2))))
        samples.append(trimesh.sample.sample_surface(mesh, count, seed=seed + index)[0])
        owners.append(np.full(count, index))
    nearest = np.concatenate(owners)[query(cKDTree(np.concatenate(samples)), np.asarray(points, float))[1]]
    expected = np.array([_predicted_part(name, part_pairs) for name in names])[nearest]
    correct = np.asarray(labels) == expected
    per_part = {}
    for index, name in enumerate(names):
        mine = nearest == index
        per_part[name] = {"surfels": int(mine.sum()), "accuracy": float(correct[mine].mean()) if mine.any() else None}
    return {"state": state, "surfels": len(points), "accuracy": float(correct.mean()), "per_part": per_part}


def _predicted_part(gt_name: str, part_pairs: Mapping[str, str] | None) -> int:
    """The predicted part index a ground-truth part name stands for (static 0; -1 for an unmatched part)."""
    if gt_name == "static":
        return 0
    name = gt_name if part_pairs is None else part_pairs.get(gt_name)
    return -1 if name is None else int(name.split("_")[1])


def _check_images(img: torch.Tensor, gt: torch.Tensor) -> None:
    """Both images must be (3, H, W) of the same shape."""
    if img.shape != gt.shape or img.dim() != 3 or img.shape[0] != 3:
        raise ValueError(f"images must both be (3, H, W); got {tuple(img.shape)} and {tuple(gt.shape)}")


@torch.no_grad()
def psnr(img: torch.Tensor, gt: torch.Tensor) -> float:
    """PSNR in dB of a (3, H, W) image in [0, 1] against its ground truth (utils.image_utils.psnr; inf if equal)."""
    _check_images(img, gt)
    return float(image_psnr(img.float(), gt.float()))


@torch.no_grad()
def ssim(img: torch.Tensor, gt: torch.Tensor) -> float:
    """SSIM (11x11 Gaussian window, sigma 1.5) of a (3, H, W) image in [0, 1] against its ground truth (the
    training loss's SSIM, utils.loss_utils.ssim: one definition in the project)."""
    _check_images(img, gt)
    return float(ssim_loss(img.float()[None], gt.float()[None]))


def evaluate_images(renders: Sequence[torch.Tensor], gts: Sequence[torch.Tensor],
                    states: Sequence[str] | None = None) -> dict:
    """Mean PSNR and SSIM over pairs of (3, H, W) images: `{"psnr", "ssim", "n"}` (None when empty); with `states`
    (each image's joint state, one of STATES) also the same per state under "start" and "end" (the canonical state
    is rendered as it is, the other through the joints, so their difference says where image error comes from)."""
    if len(renders) != len(gts) or (states is not None and len(states) != len(renders)):
        raise ValueError(f"{len(renders)} renders, {len(gts)} ground-truth images"
                         f"{'' if states is None else f' and {len(states)} states'}")
    psnrs = [psnr(r, g) for r, g in zip(renders, gts)]
    ssims = [ssim(r, g) for r, g in zip(renders, gts)]
    result = {"psnr": _mean(psnrs), "ssim": _mean(ssims), "n": len(renders)}
    for state in STATES if states is not None else ():
        mine = [i for i, s in enumerate(states) if s == state]
        result[state] = {"psnr": _mean([psnrs[i] for i in mine]), "ssim": _mean([ssims[i] for i in mine]),
                         "n": len(mine)}
    return result


def _nested(tree: Mapping[str, Any] | None, *keys: str) -> Any:
    """tree[k0][k1]..., or None when any level is missing."""
    for key in keys:
        if not isinstance(tree, Mapping) or key not in tree:
            return None
        tree = tree[key]
    return tree


def summarise(joints: dict | None = None, meshes: dict | None = None, images: dict | None = None,
              part_labels: dict | None = None) -> dict:
    """The `metrics.json` dict: the full joint/mesh/image/part-label evaluations plus a flat `summary` of headline
    numbers.

    Every summary key is always present (null where there is no ground truth), so result tables line up.
    Axis position is given in scene units (`axis_pos`) and in the papers' display scaling (`axis_pos_x10`).
    """
    summary = {
        "axis_ang": _nested(joints, "mean", "axis_ang"),
        "axis_pos": _nested(joints, "mean", "axis_pos"),
        "axis_pos_x10": _nested(joints, "mean", "axis_pos_x10"),
        "axis_offset": _nested(joints, "mean", "axis_offset"),
        "motion_revolute_deg": _nested(joints, "mean", "motion_revolute_deg"),
        "motion_prismatic_m": _nested(joints, "mean", "motion_prismatic_m"),
        "type_accuracy": _nested(joints, "mean", "type_accuracy"),
    }
    for name in ("static", "movable", "whole"):
        for state in (*STATES, "mean"):
            key = f"cd_{name}" if state == "mean" else f"cd_{name}_{state}"
            summary[key] = _nested(meshes, name, state)
    summary["part_accuracy"] = _nested(part_labels, "accuracy")
    summary["psnr"] = _nested(images, "psnr")
    summary["ssim"] = _nested(images, "ssim")
    for state in STATES:
        summary[f"psnr_{state}"] = _nested(images, state, "psnr")
    return {"summary": summary, "joints": joints, "meshes": meshes, "images": images, "part_labels": part_labels}


def write_result_csv(path: str | os.PathLike, metrics: dict, scene: str | None = None) -> None:
    """Write `result.csv`: a header and one row of the flat summary of `metrics` (`summarise` output).

    Missing numbers are written as empty cells; a leading `scene` column is added when `scene` is given.
    """
    row = {"scene": scene} if scene is not None else {}
    row.update({k: "" if v is None else v for k, v in metrics["summary"].items()})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(row), lineterminator="\n")
    writer.writeheader()
    writer.writerow(row)
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue())
