"""Stage-4 losses on per-surfel part logits: the multi-view SAM part prior and kNN smoothness in 3D.

The part prior turns each SAM region of a view into a pseudo-label: a region whose rendered class probabilities
agree (confident on average, with a clear margin between the two best classes, large enough) is relabelled as a
whole with its majority class; elsewhere each pixel keeps its own argmax. The rendered logits are then trained
towards these labels with a class-weighted cross-entropy, so one view's confident regions spread their part label to
surfels that other views see ambiguously.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree
from torch import Tensor


def region_consensus_labels(
    probs: Tensor,
    regions: Tensor,
    valid: Tensor,
    *,
    num_regions: int | None = None,
    min_confidence: float = 0.5,
    min_gap: float = 0.2,
    min_area: int = 50,
) -> Tensor:
    """Pseudo-labels (P,) int64 for P pixels with class probabilities `probs` (K, P) and region ids `regions` (P,).

    Only pixels with `valid` (P,) bool count towards a region's statistics. A region is confident when its mean
    max-probability exceeds `min_confidence`, its mean top-2 gap exceeds `min_gap` and it has at least `min_area`
    valid pixels; its pixels get the region's majority class (argmax of the mean probability), the others their own.
    `num_regions` (max region id + 1) avoids a host synchronisation when the caller knows it.
    """
    num_classes = probs.shape[0]
    if num_classes < 2:
        raise ValueError(f"the part prior needs at least 2 classes, got {num_classes}")
    ids = torch.where(valid, regions.long(), torch.zeros_like(regions, dtype=torch.long))
    if num_regions is None:
        num_regions = int(regions.max()) + 1 if regions.numel() else 1
    weight = valid.to(probs.dtype)
    best, best_class = probs.max(dim=0)
    second = probs.scatter(0, best_class[None], float("-inf")).amax(dim=0)  # topk over dim 0 costs 0.4 ms on a GPU
    stats = torch.cat([probs, best[None], (best - second)[None], weight[None]]) * weight
    sums = torch.zeros(num_regions, num_classes + 3, dtype=probs.dtype, device=probs.device)
    sums.index_add_(0, ids, stats.T)
    area = sums[:, -1]
    mean = sums[:, :-1] / area.clamp_min(1.0)[:, None]
    confident = (mean[:, -2] > min_confidence) & (mean[:, -1] > min_gap) & (area >= min_area)
    confident[:1].fill_(False)  # region 0 is 'no region'; fill_ takes the scalar without a host copy
    region_label = mean[:, :num_classes].argmax(dim=1)
    return torch.where(confident[ids], region_label[ids], best_class)


def part_prior_loss(
    logit_map: Tensor,
    alpha: Tensor,
    regions: Tensor,
    *,
    static_weight: float = 1.2,
    min_alpha: float = 0.5,
    num_regions: int | None = None,
) -> Tensor:
    """Cross-entropy of rendered logits `logit_map` (K, H, W) against SAM-region consensus labels.

    `alpha` (1, H, W) is the rendered opacity, `regions` (H, W) the stage-1 label map (0 = no region). Pixels count
    when they lie in a region and are covered (alpha > `min_alpha`); class 0 (static body) has weight
    `static_weight`. No host synchronisation when `num_regions` is given; 0 when no pixel counts.
    """
    num_classes = logit_map.shape[0]
    logits = logit_map.reshape(num_classes, -1)
    flat_regions = regions.reshape(-1).to(logits.device)
    valid = (flat_regions > 0) & (alpha.reshape(-1) > min_alpha)
    with torch.no_grad():
        labels = region_consensus_labels(logits.softmax(dim=0), flat_regions, valid, num_regions=num_regions)
    class_weight = torch.ones(num_classes, dtype=logits.dtype, device=logits.device)
    class_weight[:1].fill_(static_weight)  # not `[0] = w`, which copies w from the host and synchronises
    per_pixel = F.cross_entropy(logits.T, labels, weight=class_weight, reduction="none")
    normaliser = (class_weight[labels] * valid).sum().clamp_min(1e-6)
    return (per_pixel * valid).sum() / normaliser


def knn_smoothness_loss(logits: Tensor, neighbours: Tensor) -> Tensor:
    """Mean L1 distance between each surfel's logits (N, K) and those of its neighbours `neighbours` (N, k)."""
    return (logits[:, None, :] - logits[neighbours]).abs().sum(dim=-1).mean()


def knn_indices(points: Tensor, k: int, chunk: int = 4096) -> Tensor:
    """(N, k) int64 indices of each point's k nearest other points among `points` (N, 3), on the points' device.

    CPU: SciPy's KD-tree. CUDA: exact chunked distance matrix + top-k (a few tens of ms for 10^5 points).
    """
    n = points.shape[0]
    if n <= k:
        raise ValueError(f"need more than k={k} points for a kNN graph, got {n}")
    if not points.is_cuda:
        _, idx = cKDTree(points.detach().cpu().numpy()).query(points.detach().cpu().numpy(), k=k + 1)
        return torch.from_numpy(np.asarray(idx[:, 1:], dtype=np.int64)).to(points.device)
    pts = points.detach()
    out = torch.empty(n, k, dtype=torch.long, device=points.device)
    for start in range(0, n, chunk):
        block = torch.cdist(pts[start:start + chunk], pts)
        block[torch.arange(block.shape[0], device=pts.device), torch.arange(start, start + block.shape[0],
                                                                           device=pts.device)] = float("inf")
        out[start:start + chunk] = block.topk(k, dim=1, largest=False).indices
    return out
