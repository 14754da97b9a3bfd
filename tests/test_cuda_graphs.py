"""The shared image-loss terms and the CUDA-graph replay (`utils.cuda_graphs.GraphedFunction`) of them and of stage
4's deformation and part prior."""
from __future__ import annotations

from typing import Callable

import pytest
import torch

from gaussian_renderer.reference import depth_to_normal
from gaussian_renderer import camera_tensors, render
from scene.articulation import deform_surfels
from scene.cameras import Camera
from scene.gaussian_model import GaussianModel
from utils.cuda_graphs import GraphedFunction
from utils.loss_utils import depth_log_l1, distortion_loss, normal_consistency_loss
from utils.part_losses import part_prior_loss
from training.image_losses import IMAGE_TERMS, LossWeights, image_loss_terms, photometric_loss

WEIGHTS = LossWeights(lambda_dssim=0.2, lambda_depth=1.0, lambda_normal=0.05, lambda_dist=0.1)
H, W = 40, 56


def random_maps(seed: int, device: str, with_normals: bool = True) -> dict[str, torch.Tensor]:
    """Rendered maps (requiring grad) and targets of one view; some ground-truth depth pixels are invalid (0)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g).to(device)

    gt_depth = 2.0 + rand(1, H, W)
    gt_depth[:, : H // 4] = 0.0
    maps = {"render": rand(3, H, W), "depth": 2.0 + rand(1, H, W), "image": rand(3, H, W),
            "image_alpha": rand(1, H, W), "bg": rand(3), "gt_depth": gt_depth}
    if with_normals:
        K = torch.tensor([[50.0, 0.0, W / 2], [0.0, 50.0, H / 2], [0.0, 0.0, 1.0]])
        maps |= {"rend_normal": rand(3, H, W) - 0.5, "alpha": rand(1, H, W), "rend_dist": rand(1, H, W) * 0.01,
                 "viewmat": torch.eye(4).to(device), "K": K.to(device)}
    for name in ("render", "depth", "rend_normal", "alpha", "rend_dist"):
        if name in maps:
            maps[name].requires_grad_()
    return maps


def test_image_loss_terms_are_the_individual_losses_and_zero_when_absent() -> None:
    maps = random_maps(0, "cpu")
    target = maps["image"] * maps["image_alpha"] + maps["bg"].view(3, 1, 1) * (1.0 - maps["image_alpha"])
    surf_normal = depth_to_normal(maps["depth"][None], maps["viewmat"][None], maps["K"][None])[0]
    expected = torch.stack([
        photometric_loss(maps["render"], target, WEIGHTS.lambda_dssim),
        WEIGHTS.lambda_depth * depth_log_l1(maps["depth"], maps["gt_depth"]),
        WEIGHTS.lambda_normal * normal_consistency_loss(maps["rend_normal"], surf_normal, maps["alpha"]),
        WEIGHTS.lambda_dist * distortion_loss(maps["rend_dist"]),
    ])
    terms = image_loss_terms(maps, WEIGHTS)
    assert terms.shape == (len(IMAGE_TERMS),)
    torch.testing.assert_close(terms, expected)
    assert (terms > 0).all()
    only_photo = image_loss_terms({"render": maps["render"], "target": target}, WEIGHTS)
    torch.testing.assert_close(only_photo, torch.stack([expected[0], *torch.zeros(3)]))


def test_normal_term_matches_the_renderers_depth_normals() -> None:
    """The loss derives the depth normals itself (inside a captured graph on CUDA); they are the renderer's."""
    g = torch.Generator().manual_seed(4)
    points = (torch.rand(300, 3, generator=g) - 0.5) * torch.tensor([0.8, 0.8, 0.3])
    model = GaussianModel.from_point_cloud(points.numpy(), torch.rand(300, 3, generator=g).numpy(), sh_degree=0,
                                           init_opacity=0.5, device=torch.device("cpu"), seed=0)
    world_to_cam = torch.eye(4)
    world_to_cam[2, 3] = 2.5  # looking along +z at the points from 2.5 units
    cam = Camera(0, 0, "train", "view", 32, 32, 40.0, 40.0, 16.0, 16.0, world_to_cam)
    out = render(cam, model, torch.zeros(3), depth_ratio=0.5)
    viewmats, Ks, _, _ = camera_tensors([cam], torch.device("cpu"), torch.float32)
    maps = {"render": out["render"], "target": out["render"].detach(), "rend_normal": out["rend_normal"],
            "alpha": out["alpha"], "depth": out["depth"], "viewmat": viewmats[0], "K": Ks[0]}
    expected = WEIGHTS.lambda_normal * normal_consistency_loss(out["rend_normal"], out["surf_normal"], out["alpha"])
    assert expected > 0
    torch.testing.assert_close(image_loss_terms(maps, WEIGHTS)[2], expected)


def stacked_maps(seeds: tuple[int, ...], device: str, with_normals: bool = True) -> dict[str, torch.Tensor]:
    """`random_maps` of several views stacked on a leading axis (rendered maps: computed tensors requiring grad)."""
    views = [random_maps(seed, device, with_normals) for seed in seeds]
    maps = {name: torch.stack([view[name].detach() for view in views]) for name in views[0]}
    for name in ("render", "depth", "rend_normal", "alpha", "rend_dist"):
        if name in maps:
            maps[name] = maps[name].requires_grad_() * 1.0
    return maps


def test_stacked_image_loss_terms_are_each_views_terms() -> None:
    """Stage 2's loss of both states at once (maps stacked): row i is view i's `image_loss_terms`, with its
    gradients."""
    maps = stacked_maps((5, 6), "cpu")
    terms = image_loss_terms(maps, WEIGHTS)
    assert terms.shape == (2, len(IMAGE_TERMS))
    for i in range(2):
        view = {name: value[i] for name, value in maps.items()}
        torch.testing.assert_close(terms[i], image_loss_terms(view, WEIGHTS))
    grad = torch.autograd.grad(terms[1].sum(), maps["render"])[0]
    assert not grad[0].any() and grad[1].abs().sum() > 0


@pytest.mark.cuda
def test_graphed_stacked_loss_matches_eager_on_cuda() -> None:
    """The stacked loss replayed from a graph: values and gradients as eager, for one and for two views."""
    loss = GraphedFunction(lambda maps: image_loss_terms(maps, WEIGHTS))
    for seeds, with_normals in (((0, 1), False), ((2, 3), True), ((4,), True), ((5, 6), True)):
        maps = stacked_maps(seeds, "cuda", with_normals)
        _assert_close(_values_and_grads(loss, maps),
                      _values_and_grads(lambda m: image_loss_terms(m, WEIGHTS), maps))
    assert len(loss._graphs) == 3


def test_graphed_loss_runs_eagerly_on_the_cpu() -> None:
    calls = []

    def body(maps: dict[str, torch.Tensor]) -> torch.Tensor:
        calls.append(sorted(maps))
        return image_loss_terms(maps, WEIGHTS)

    maps = random_maps(1, "cpu")
    torch.testing.assert_close(GraphedFunction(body)(maps), image_loss_terms(maps, WEIGHTS))
    assert calls == [sorted(maps)]


def _values_and_grads(loss: Callable[[dict], torch.Tensor], maps: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list]:
    """`loss(maps)` and the gradients of a weighted sum of its terms for the maps requiring grad (None where unused:
    alpha is detached)."""
    terms = loss(maps)
    leaves = [t for t in maps.values() if t.requires_grad]
    weights = torch.arange(1.0, terms.numel() + 1, device=terms.device).view_as(terms)
    return terms.detach(), list(torch.autograd.grad((terms * weights).sum(), leaves, allow_unused=True))


def _assert_close(got: tuple[torch.Tensor, list], want: tuple[torch.Tensor, list]) -> None:
    """Graphed against eager `_values_and_grads`: values to 1e-5, gradients to 1e-4 (an unused one zero or None)."""
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    for grad, expected in zip(got[1], want[1]):
        if expected is None:
            assert grad is None or not grad.any()
        else:
            torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-7)


@pytest.mark.cuda
def test_graphed_loss_matches_eager_values_and_gradients_on_cuda() -> None:
    loss = GraphedFunction(lambda maps: image_loss_terms(maps, WEIGHTS))
    kept = []
    for seed, with_normals in ((0, False), (1, True), (2, False), (3, True)):  # two signatures, each replayed
        maps = random_maps(seed, "cuda", with_normals)
        graphed = _values_and_grads(loss, maps)
        kept.append((graphed[0], image_loss_terms(maps, WEIGHTS).detach()))
        _assert_close(graphed, _values_and_grads(lambda m: image_loss_terms(m, WEIGHTS), maps))
    assert len(loss._graphs) == 2
    for terms, expected in kept:  # returned values are copies: later replays do not overwrite them
        torch.testing.assert_close(terms, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
def test_two_graphed_losses_in_one_backward_on_cuda() -> None:
    """Stage 4's pattern: two instances evaluated before one backward keep their own buffers."""
    first, second = (GraphedFunction(lambda maps: image_loss_terms(maps, WEIGHTS)) for _ in range(2))
    for seed in range(3):
        a, b = random_maps(2 * seed, "cuda", False), random_maps(2 * seed + 1, "cuda", False)
        total = first(a).sum() + 2.0 * second(b).sum()
        total.backward()
        eager = image_loss_terms(a, WEIGHTS).sum() + 2.0 * image_loss_terms(b, WEIGHTS).sum()
        torch.testing.assert_close(total, eager, rtol=1e-5, atol=1e-6)
        expected = torch.autograd.grad(eager, [a["render"], b["render"], a["depth"], b["depth"]])
        for got, want in zip([a["render"].grad, b["render"].grad, a["depth"].grad, b["depth"].grad], expected):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


def _deform_inputs(n: int, seed: int, soft: bool) -> dict[str, torch.Tensor]:
    """Stage 4's deformation inputs on CUDA: 3 part motions, surfels, soft (E) or one-hot (M, no grad) weights."""
    g = torch.Generator().manual_seed(seed)
    part_q = torch.nn.functional.normalize(torch.randn(3, 4, generator=g), dim=1)
    logits = torch.randn(n, 3, generator=g)
    inputs = {"part_q": part_q, "part_t": torch.randn(3, 3, generator=g), "means": torch.randn(n, 3, generator=g),
              "rotations": torch.randn(n, 4, generator=g),
              "weights": logits.softmax(1) if soft else torch.nn.functional.one_hot(logits.argmax(1), 3).float()}
    inputs = {name: t.cuda() for name, t in inputs.items()}
    for name in ("part_q", "part_t", "means", "rotations", *(("weights",) if soft else ())):
        inputs[name] = inputs[name] * 1.0  # computed tensors, as in training (not leaves)
        inputs[name].requires_grad_()
    return inputs


@pytest.mark.cuda
def test_graphed_deformation_matches_eager_across_sizes_and_phases_on_cuda() -> None:
    """Stage 4's deformation: values and gradients as eager, through a new surfel count and a phase change, with
    at most two graphs kept."""
    deformation = GraphedFunction(lambda t: deform_surfels(t["part_q"], t["part_t"], t["means"], t["rotations"],
                                                           t["weights"]), max_graphs=2)
    for step, (n, soft) in enumerate([(500, True), (500, True), (700, True), (700, False), (700, True), (500, True)]):
        inputs = _deform_inputs(n, step, soft)
        leaves = [t for t in inputs.values() if t.requires_grad]
        outputs = [deformation(inputs), deform_surfels(*(inputs[k] for k in ("part_q", "part_t", "means",
                                                                              "rotations", "weights")))]
        weights = [torch.rand(n, 3, device="cuda"), torch.rand(n, 4, device="cuda")]
        grads = [torch.autograd.grad(sum((w * x).sum() for w, x in zip(weights, out)), leaves) for out in outputs]
        for got, want in zip(outputs[0], outputs[1]):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        for got, want in zip(*grads):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        assert len(deformation._graphs) <= 2
    assert len(deformation._graphs) == 2


@pytest.mark.cuda
def test_graphed_part_prior_matches_eager_on_cuda() -> None:
    """Stage 4's part prior with one region count for every view: as eager, for views with fewer regions too."""
    prior = GraphedFunction(lambda t: part_prior_loss(t["logits"], t["alpha"], t["regions"], num_regions=12))
    for seed, regions_in_view in ((0, 12), (1, 5), (2, 9)):
        g = torch.Generator().manual_seed(seed)
        logits = (torch.randn(3, H, W, generator=g) * 2.0).cuda().requires_grad_()
        alpha = torch.rand(1, H, W, generator=g).cuda()
        regions = torch.randint(0, regions_in_view, (H, W), generator=g, dtype=torch.int32).cuda()
        regions[: H // 2, : W // 2] = 1  # one large region, confident or not
        got = prior({"logits": logits * 1.0, "alpha": alpha, "regions": regions})
        want = part_prior_loss(logits * 1.0, alpha, regions, num_regions=regions_in_view)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        grads = [torch.autograd.grad(value, logits)[0] for value in (got, want)]
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-7)
    assert len(prior._graphs) == 1
