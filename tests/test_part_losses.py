"""Stage-4 part losses: SAM-region consensus labels, the part-prior cross-entropy, kNN graph and smoothness."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from utils.part_losses import knn_indices, knn_smoothness_loss, part_prior_loss, region_consensus_labels


def _probs(pixels: list[list[float]]) -> torch.Tensor:
    return torch.tensor(pixels, dtype=torch.float32).T  # (K, P)


def test_confident_region_takes_its_majority_class() -> None:
    # region 1: 60 pixels, 50 confidently class 2 and 10 confidently class 1 -> all become class 2
    probs = _probs([[0.05, 0.1, 0.85]] * 50 + [[0.05, 0.85, 0.1]] * 10)
    regions = torch.ones(60, dtype=torch.long)
    labels = region_consensus_labels(probs, regions, torch.ones(60, dtype=torch.bool))
    assert labels.tolist() == [2] * 60


def test_unconfident_small_and_unlabelled_regions_keep_per_pixel_argmax() -> None:
    ambiguous = [[0.34, 0.33, 0.33]] * 30 + [[0.3, 0.4, 0.3]] * 30       # region 1: mean max prob < 0.5
    small = [[0.9, 0.05, 0.05]] * 20 + [[0.05, 0.9, 0.05]] * 9            # region 2: 29 px < min_area 50
    none = [[0.1, 0.1, 0.8]] * 10                                         # region 0: no SAM region
    probs = _probs(ambiguous + small + none)
    regions = torch.tensor([1] * 60 + [2] * 29 + [0] * 10)
    labels = region_consensus_labels(probs, regions, torch.ones(99, dtype=torch.bool), num_regions=3)
    assert torch.equal(labels, probs.argmax(dim=0))


def test_small_gap_region_is_not_relabelled() -> None:
    # mean max-probability 0.55 but the two best classes are 0.1 apart on average: below the 0.2 gap
    probs = _probs([[0.55, 0.45, 0.0]] * 40 + [[0.45, 0.55, 0.0]] * 20)
    labels = region_consensus_labels(probs, torch.ones(60, dtype=torch.long), torch.ones(60, dtype=torch.bool))
    assert torch.equal(labels, probs.argmax(dim=0))


def test_invalid_pixels_do_not_vote() -> None:
    # 50 valid pixels: 40 say class 1, 10 say class 0; 100 invalid pixels say class 0 and must not outvote them
    probs = _probs([[0.1, 0.9]] * 40 + [[0.9, 0.1]] * 10 + [[0.9, 0.1]] * 100)
    valid = torch.tensor([True] * 50 + [False] * 100)
    labels = region_consensus_labels(probs, torch.ones(150, dtype=torch.long), valid)
    assert labels[:50].tolist() == [1] * 50


def test_part_prior_descent_spreads_the_region_label() -> None:
    """Gradient steps on rendered logits move a region's minority pixels to its majority class."""
    torch.manual_seed(0)
    logits = torch.zeros(2, 10, 10)
    logits[1] = 3.0
    logits[0, :, :3] = 3.0            # the left 30 % prefer class 0
    logits[1, :, :3] = -3.0
    logits.requires_grad_()
    regions = torch.ones(10, 10, dtype=torch.long)
    alpha = torch.ones(1, 10, 10)
    optimizer = torch.optim.SGD([logits], lr=50.0)
    first = None
    for _ in range(20):
        loss = part_prior_loss(logits, alpha, regions, static_weight=1.2)
        first = float(loss.detach()) if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.5 * first
    assert (logits.argmax(dim=0) == 1).all()


def test_part_prior_ignores_uncovered_pixels_and_is_zero_without_regions() -> None:
    logits = torch.randn(3, 8, 8, requires_grad=True)
    loss = part_prior_loss(logits, torch.zeros(1, 8, 8), torch.ones(8, 8, dtype=torch.long))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.count_nonzero(logits.grad) == 0
    assert float(part_prior_loss(logits, torch.ones(1, 8, 8), torch.zeros(8, 8, dtype=torch.long)).detach()) == 0.0


def test_part_prior_static_weight_scales_the_static_class() -> None:
    logits = torch.zeros(2, 10, 10)
    logits[0] = 4.0  # confident static everywhere: the region label is 0, per-pixel loss identical
    regions = torch.ones(10, 10, dtype=torch.long)
    a = part_prior_loss(logits, torch.ones(1, 10, 10), regions, static_weight=1.0)
    b = part_prior_loss(logits, torch.ones(1, 10, 10), regions, static_weight=2.0)
    assert torch.allclose(a, b)  # weighted mean: one class only, weights cancel
    logits[:, :, :5] = torch.tensor([0.0, 4.0])[:, None, None]  # half the pixels move to class 1
    c = part_prior_loss(logits, torch.ones(1, 10, 10), regions, static_weight=1.0)
    assert torch.isfinite(c)


def test_part_prior_needs_two_classes() -> None:
    with pytest.raises(ValueError, match="at least 2 classes"):
        part_prior_loss(torch.zeros(1, 4, 4), torch.ones(1, 4, 4), torch.ones(4, 4, dtype=torch.long))


def test_knn_indices_match_brute_force_and_exclude_self() -> None:
    rng = np.random.default_rng(0)
    points = torch.from_numpy(rng.random((300, 3)).astype(np.float32))
    idx = knn_indices(points, 4)
    dist = torch.cdist(points, points)
    dist.fill_diagonal_(float("inf"))
    expected = dist.topk(4, largest=False).indices
    assert idx.shape == (300, 4)
    assert not (idx == torch.arange(300)[:, None]).any()
    assert torch.equal(idx.sort(dim=1).values, expected.sort(dim=1).values)
    with pytest.raises(ValueError, match="more than k=4"):
        knn_indices(points[:4], 4)


@pytest.mark.cuda
def test_knn_indices_cuda_matches_cpu() -> None:
    points = torch.rand(5000, 3)
    cpu = knn_indices(points, 4)
    gpu = knn_indices(points.cuda(), 4, chunk=1000).cpu()
    assert (cpu.sort(dim=1).values == gpu.sort(dim=1).values).float().mean() > 0.999


def test_knn_smoothness() -> None:
    neighbours = torch.tensor([[1], [0], [3], [2]])
    same = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 2.0]])
    assert float(knn_smoothness_loss(same, neighbours)) == 0.0
    different = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0], [0.0, 2.0]])
    assert float(knn_smoothness_loss(different, neighbours)) == pytest.approx(1.0)  # (2 + 2 + 0 + 0) / 4
