"""The stage-4 model on disk: the contract between `train.py` (writes it) and `render.py` (reads it).

    <model_path>/point_cloud/iteration_<N>/point_cloud.ply    canonical surfels (GaussianModel.save_ply); feature
                                                              channels feat_0..feat_{K-1} are the part logits
    <model_path>/point_cloud/iteration_<N>/articulation.json  {"canonical_state": 0|1,
                                                               "model": ArticulationModel.to_json(),
                                                               "joints": [{"part": k, **joint}] (canonical -> other)}

Part 0 is the static body, parts 1..K-1 the movable ones; a surfel's part is the argmax of its logits. The canonical
state c is the larger-motion state; the other state is reached by deforming the canonical surfels with hard (one-hot)
part weights. `save` writes exactly this layout (atomically, file by file); `TrainedModel.load` reads and checks it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from scene.articulation import ArticulationModel, blend_weights, joint_start_to_end
from scene.contract import ARTICULATION_NAME, ITERATION_PATTERN, MODEL_PLY_NAME as PLY_NAME, POINT_CLOUD_DIR, \
    iteration_dir
from scene.gaussian_model import GaussianModel
from utils.io_utils import read_json, write_json

__all__ = ["ARTICULATION_NAME", "PLY_NAME", "ModelNotFoundError", "TrainedModel", "iteration_dir", "save",
           "saved_iterations", "resolve_iteration"]


class ModelNotFoundError(FileNotFoundError):
    """A stage-4 model folder or one of its files is missing."""


def saved_iterations(model_path: str | Path) -> list[int]:
    """Sorted iterations that have an `iteration_<N>` folder holding both contract files."""
    root = Path(model_path) / POINT_CLOUD_DIR
    found = []
    for folder in root.glob("iteration_*") if root.is_dir() else []:
        match = ITERATION_PATTERN.fullmatch(folder.name)
        if match and (folder / PLY_NAME).is_file() and (folder / ARTICULATION_NAME).is_file():
            found.append(int(match.group(1)))
    return sorted(found)


def resolve_iteration(model_path: str | Path, iteration: int | str) -> int:
    """`iteration` as a number; "final" (or -1) is the highest saved iteration. Raises ModelNotFoundError."""
    if str(iteration) in ("final", "-1"):
        found = saved_iterations(model_path)
        if not found:
            raise ModelNotFoundError(f"no trained model under {Path(model_path) / POINT_CLOUD_DIR} "
                                     f"(expected iteration_<N>/{PLY_NAME} and {ARTICULATION_NAME})")
        return found[-1]
    try:
        return int(iteration)
    except ValueError as err:
        raise ValueError(f"iteration must be a number or 'final', got {iteration!r}") from err


def save(model_path: str | Path, iteration: int, gaussians: GaussianModel, articulation: ArticulationModel,
         canonical_state: int) -> Path:
    """Write the stage-4 contract for `iteration` (PLY first, then the articulation JSON); returns its folder.

    The model's feature channels must be the K part logits, K = `articulation.num_parts`.
    """
    if canonical_state not in (0, 1):
        raise ValueError(f"canonical_state must be 0 (start) or 1 (end), got {canonical_state!r}")
    if gaussians.num_features != articulation.num_parts:
        raise ValueError(f"the surfels carry {gaussians.num_features} feature channels but the articulation has "
                         f"{articulation.num_parts} parts; the features must be the part logits")
    folder = iteration_dir(model_path, iteration)
    gaussians.save_ply(folder / PLY_NAME)
    joints = [{"part": k, **articulation.joint(k)} for k in range(1, articulation.num_parts)]
    write_json(folder / ARTICULATION_NAME,
               {"canonical_state": int(canonical_state), "model": articulation.to_json(), "joints": joints})
    return folder


def interpolated_articulation(articulation: ArticulationModel, fraction: float) -> ArticulationModel:
    """A model whose joints move `fraction` of each joint's motion (angle or distance; 0 = rest, 1 = full).

    The motion follows the joint dicts (screw translation along a revolute axis is dropped), which is what a
    URDF of the object does too.
    """
    scaled = ArticulationModel(articulation.joint_types, dtype=articulation.quats.dtype)
    for k in range(1, articulation.num_parts):
        joint = articulation.joint(k)
        scaled.set_joint(k, joint["type"], joint["axis_origin"], joint["axis_direction"], fraction * joint["motion"])
    return scaled.to(articulation.quats.device)


@dataclass
class TrainedModel:
    """A loaded stage-4 model: canonical surfels with part logits, the part motions and the canonical state."""

    gaussians: GaussianModel
    articulation: ArticulationModel
    canonical_state: int
    iteration: int
    folder: Path

    @classmethod
    def load(cls, model_path: str | Path, iteration: int | str = "final",
             device: torch.device | str = "cpu") -> TrainedModel:
        """Read `iteration` (a number or "final") of the model at `model_path`.

        ModelNotFoundError names the missing file; ValueError names a file whose content is wrong.
        """
        number = resolve_iteration(model_path, iteration)
        folder = iteration_dir(model_path, number)
        for name in (PLY_NAME, ARTICULATION_NAME):
            if not (folder / name).is_file():
                raise ModelNotFoundError(f"trained model file {folder / name} is missing")
        path = folder / ARTICULATION_NAME
        data = read_json(path, "articulation file")
        if not isinstance(data, dict) or data.get("canonical_state") not in (0, 1) or "model" not in data:
            raise ValueError(f"{path}: expected a dict with canonical_state 0 or 1 and model")
        articulation = ArticulationModel.from_json(data["model"], source=str(path)).to(device)
        gaussians = GaussianModel.load_ply(folder / PLY_NAME, device=device)
        if gaussians.num_features != articulation.num_parts:
            raise ValueError(f"{folder / PLY_NAME} has {gaussians.num_features} feat_* channels but {path} describes "
                             f"{articulation.num_parts} parts (1 static + {articulation.num_parts - 1} movable)")
        for param in gaussians.params.values():
            param.requires_grad_(False)
        articulation.requires_grad_(False)
        return cls(gaussians, articulation, int(data["canonical_state"]), number, folder)

    @property
    def num_parts(self) -> int:
        """K: the static body plus the movable parts."""
        return self.articulation.num_parts

    @property
    def other_state(self) -> int:
        return 1 - self.canonical_state

    @property
    def part_logits(self) -> Tensor:
        """(N, K) part logits of the surfels."""
        return self.gaussians.params["features"]

    @property
    def part_ids(self) -> Tensor:
        """(N,) int64 part of each surfel (argmax of its logits)."""
        return self.part_logits.argmax(dim=-1)

    def part_mask(self, part: int) -> Tensor:
        """(N,) bool: the surfels of `part` (0 static, 1..K-1 movable, -1 every surfel)."""
        if part == -1:
            return torch.ones(self.gaussians.num_points, dtype=torch.bool, device=self.gaussians.device)
        if not 0 <= part < self.num_parts:
            raise IndexError(f"part must be -1 (whole) or in 0..{self.num_parts - 1}, got {part}")
        return self.part_ids == part

    @torch.no_grad()
    def surfels_in_state(self, state: int) -> tuple[Tensor, Tensor]:
        """Centres (N, 3) and raw rotations (N, 4) of the surfels in `state` (0 start, 1 end).

        The canonical state returns the stored surfels; the other state deforms them with hard part weights.
        """
        if state not in (0, 1):
            raise ValueError(f"state must be 0 (start) or 1 (end), got {state!r}")
        means, quats = self.gaussians.get_xyz, self.gaussians.params["quats"]
        if state == self.canonical_state:
            return means, quats
        return self.articulation.deform(means, quats, blend_weights(self.part_logits, hard=True))

    @torch.no_grad()
    def surfels_between(self, fraction: float) -> tuple[Tensor, Tensor]:
        """Centres (N, 3) and rotations (N, 4) at `fraction` of the way from the start (0) to the end (1) state,
        moving every joint proportionally (for animations)."""
        canonical_fraction = fraction if self.canonical_state == 0 else 1.0 - fraction
        model = interpolated_articulation(self.articulation, canonical_fraction)
        weights = blend_weights(self.part_logits, hard=True)
        return model.deform(self.gaussians.get_xyz, self.gaussians.params["quats"], weights)

    def joints_start_to_end(self) -> list[dict]:
        """Joint dicts with their `part`, from the start state to the end state in world coordinates.

        The motion is made non-negative by flipping the axis direction where needed (the same motion), so the
        export does not depend on which state was canonical.
        """
        joints = []
        for k in range(1, self.num_parts):
            joint = joint_start_to_end({"part": k, **self.articulation.joint(k)}, self.canonical_state)
            if joint["motion"] < 0:
                joint = {**joint, "axis_direction": [-v for v in joint["axis_direction"]], "motion": -joint["motion"]}
            joints.append(joint)
        return joints
