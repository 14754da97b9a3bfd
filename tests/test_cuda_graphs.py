"""The shared image-loss terms and their CUDA-graph replay (`utils.loss_graphs.GraphedLoss`)."""
from __future__ import annotations

import argparse

import pytest
import torch

from gaussian_renderer.reference import depth_to_normal
from gaussian_renderer import camera_tensors, render
from scene.cameras import Camera
from scene.gaussian_model import GaussianModel
from utils.loss_graphs import GraphedLoss
from utils.loss_utils import depth_log_l1, distortion_loss, normal_consistency_loss
from utils.train_utils import IMAGE_TERMS, image_loss_terms, photometric_loss

ARGS = argparse.Namespace(lambda_dssim=0.2, lambda_depth=1.0, lambda_normal=0.05, lambda_dist=0.1)
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
        photometric_loss(maps["render"], target, ARGS.lambda_dssim),
        ARGS.lambda_depth * depth_log_l1(maps["depth"], maps["gt_depth"]),
        ARGS.lambda_normal * normal_consistency_loss(maps["rend_normal"], surf_normal, maps["alpha"]),
        ARGS.lambda_dist * distortion_loss(maps["rend_dist"]),
    ])
    terms = image_loss_terms(maps, ARGS)
    assert terms.shape == (len(IMAGE_TERMS),)
    torch.testing.assert_close(terms, expected)
    assert (terms > 0).all()
    only_photo = image_loss_terms({"render": maps["render"], "target": target}, ARGS)
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
    expected = ARGS.lambda_normal * normal_consistency_loss(out["rend_normal"], out["surf_normal"], out["alpha"])
    assert expected > 0
    torch.testing.assert_close(image_loss_terms(maps, ARGS)[2], expected)


def test_graphed_loss_runs_eagerly_on_the_cpu() -> None:
    calls = []

    def body(maps: dict[str, torch.Tensor]) -> torch.Tensor:
        calls.append(sorted(maps))
        return image_loss_terms(maps, ARGS)

    maps = random_maps(1, "cpu")
    torch.testing.assert_close(GraphedLoss(body)(maps), image_loss_terms(maps, ARGS))
    assert calls == [sorted(maps)]


def _values_and_grads(loss: GraphedLoss | None, maps: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list]:
    terms = image_loss_terms(maps, ARGS) if loss is None else loss(maps)
    leaves = [t for t in maps.values() if t.requires_grad]
    weights = torch.arange(1.0, len(IMAGE_TERMS) + 1, device=terms.device)
    grads = torch.autograd.grad((terms * weights).sum(), leaves, allow_unused=True)  # alpha: detached
    return terms.detach(), list(grads)


@pytest.mark.cuda
def test_graphed_loss_matches_eager_values_and_gradients_on_cuda() -> None:
    loss = GraphedLoss(lambda maps: image_loss_terms(maps, ARGS))
    kept = []
    for seed, with_normals in ((0, False), (1, True), (2, False), (3, True)):  # two signatures, each replayed
        maps = random_maps(seed, "cuda", with_normals)
        terms, grads = _values_and_grads(loss, maps)
        kept.append((terms, image_loss_terms(maps, ARGS).detach()))
        expected_terms, expected_grads = _values_and_grads(None, maps)
        torch.testing.assert_close(terms, expected_terms, rtol=1e-5, atol=1e-6)
        for grad, expected in zip(grads, expected_grads):
            if expected is None:
                assert grad is None or not grad.any()
            else:
                torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-7)
    assert len(loss._graphs) == 2
    for terms, expected in kept:  # returned values are copies: later replays do not overwrite them
        torch.testing.assert_close(terms, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
def test_two_graphed_losses_in_one_backward_on_cuda() -> None:
    """Stage 4's pattern: two instances evaluated before one backward keep their own buffers."""
    first, second = (GraphedLoss(lambda maps: image_loss_terms(maps, ARGS)) for _ in range(2))
    for seed in range(3):
        a, b = random_maps(2 * seed, "cuda", False), random_maps(2 * seed + 1, "cuda", False)
        total = first(a).sum() + 2.0 * second(b).sum()
        total.backward()
        eager = image_loss_terms(a, ARGS).sum() + 2.0 * image_loss_terms(b, ARGS).sum()
        torch.testing.assert_close(total, eager, rtol=1e-5, atol=1e-6)
        expected = torch.autograd.grad(eager, [a["render"], b["render"], a["depth"], b["depth"]])
        for got, want in zip([a["render"].grad, b["render"].grad, a["depth"].grad, b["depth"].grad], expected):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
