"""Stage 3's global motion fit (`utils/multi_motion.py`): label smoothing, the typed choice of motions, and the fit
on touching drawer fronts."""
from __future__ import annotations

import numpy as np
import pytest

from test_voxelize import box_voxels, drawer_fronts
from utils.multi_motion import MotionCost, choose_motions, smooth_labels
from utils.part_selection import VoxelizeConfig, discover_parts


def test_smooth_labels_removes_stray_labels_and_keeps_clear_boundaries() -> None:
    voxels = box_voxels((0, 0, 0), (19, 9, 9))
    left = voxels[:, 0] < 10
    cost = np.stack([np.where(left, 0.0, 1.0), np.where(left, 1.0, 0.0)])  # motion 0 explains x < 10, 1 the rest
    stray = np.all(voxels == (4, 5, 5), axis=1)
    cost[:, stray] = [[0.6], [0.0]]  # a chance landing of the wrong motion inside the left block
    labels = smooth_labels(voxels, cost, (~left).astype(np.int64), weight=0.1)
    assert np.array_equal(labels, (~left).astype(np.int64))
    labels = smooth_labels(voxels, cost, np.zeros(len(voxels), dtype=np.int64), weight=0.1)
    assert np.array_equal(labels, (~left).astype(np.int64))  # the boundary moves to where the costs change


class _Scene:
    """Stand-in for `SceneCost`: the total is the sum over chunks of the cheapest motion."""

    @staticmethod
    def total(costs: list[MotionCost]) -> float:
        return float(np.stack([c.chunk_cost for c in costs]).min(axis=0).sum())


def _cost(values: list[float]) -> MotionCost:
    return MotionCost(np.zeros(0), np.asarray(values, dtype=float), np.zeros((len(values), 0), dtype=bool))


def test_choose_motions_respects_the_joint_types() -> None:
    # chunk costs of: a door's turn, a useless turn, one pull that explains both drawers roughly, and each drawer's
    costs = [_cost([0, 9, 9]), _cost([9, 9, 9]), _cost([9, 1, 1]), _cost([9, 0, 9]), _cost([9, 9, 0])]
    kinds = ["revolute", "revolute", "prismatic", "prismatic", "prismatic"]
    # greedy takes the rough pull first; a swap replaces it once both drawers' own pulls are allowed
    assert sorted(choose_motions(_Scene(), costs, kinds, ("revolute", "prismatic", "prismatic"))) == [0, 3, 4]
    assert sorted(choose_motions(_Scene(), costs, kinds, ("revolute", "revolute", "prismatic"))) == [0, 1, 2]


def test_touching_fronts_pulled_apart_by_the_global_fit() -> None:
    """Fronts that touch, pulled out 30 and 33 cm, with their types given: the global fit's parts, one front each."""
    states = drawer_fronts((0.30, 0.33), np.random.default_rng(1), gap=0.0)
    result = discover_parts(*states, VoxelizeConfig(num_movable=2, joint_types=("prismatic", "prismatic")))
    assert all(part.fitted == "prismatic" and not part.weak for part in result.parts)
    upper = [float((result.grid.centres(part.voxels)[:, 2] > 0).mean()) for part in result.parts]
    lower, higher = np.argsort(upper)
    assert upper[lower] < 0.1 and upper[higher] > 0.9
    assert result.parts[lower].transform[1, 3] == pytest.approx(0.30, abs=0.005)
    assert result.parts[higher].transform[1, 3] == pytest.approx(0.33, abs=0.005)
