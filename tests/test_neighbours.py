"""Nearest-neighbour queries on one core or all (`utils.neighbours.query`)."""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from utils.neighbours import PARALLEL_MIN_POINTS, query


def test_small_and_large_queries_give_scipys_pairs() -> None:
    rng = np.random.default_rng(0)
    tree = cKDTree(rng.random((5000, 3)))
    for count in (1, 7, PARALLEL_MIN_POINTS - 1, PARALLEL_MIN_POINTS, 3 * PARALLEL_MIN_POINTS):
        points = rng.random((count, 3))
        for options in ({}, {"k": 4}, {"distance_upper_bound": 0.01}):
            distances, indices = query(tree, points, **options)
            want_distances, want_indices = tree.query(points, workers=1, **options)
            np.testing.assert_array_equal(distances, want_distances)
            np.testing.assert_array_equal(indices, want_indices)
