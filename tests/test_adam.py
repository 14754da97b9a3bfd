"""FusedAdam: the same updates as torch.optim.Adam (on the CPU here; its gsplat kernel in test_renderer_cuda.py), a
state that gsplat's densification ops and torch checkpoints handle, and torch Adam checkpoints loading into it."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from gsplat.strategy.ops import remove

from utils.adam import FusedAdam

ROOT = Path(__file__).resolve().parents[1]


def gradients(shape: tuple[int, ...], steps: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) * 10.0 ** float(torch.randint(-4, 2, (1,), generator=g)) for _ in
            range(steps)]


def start(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.linspace(-1.0, 1.0, torch.Size(shape).numel()).view(shape)


def run(optimizer_cls: type, grads: list[torch.Tensor], lrs: list[float], device: str = "cpu",
        **kwargs) -> tuple[torch.Tensor, dict]:
    param = torch.nn.Parameter(start(grads[0].shape).to(device))
    optimizer = optimizer_cls([{"params": [param], "lr": lrs[0]}], **kwargs)
    for grad, lr in zip(grads, lrs):
        optimizer.param_groups[0]["lr"] = lr
        param.grad = grad.clone()
        optimizer.step()
    return param.detach(), optimizer.state[param]


@pytest.mark.parametrize("eps", [1e-15, 1e-8])
def test_matches_torch_adam(eps):
    grads = gradients((50, 15, 3), 40)
    lrs = [1e-2 * 0.9**i for i in range(40)]  # a decaying schedule, as the positions' learning rate
    ours, state = run(FusedAdam, grads, lrs, eps=eps)
    theirs, reference = run(torch.optim.Adam, grads, lrs, eps=eps)
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-6)
    assert torch.allclose(state["exp_avg"], reference["exp_avg"], rtol=1e-6, atol=1e-12)
    assert torch.allclose(state["exp_avg_sq"], reference["exp_avg_sq"], rtol=1e-6, atol=1e-15)
    assert float(state["step"]) == 40 and state["step"].device.type == "cpu"
    assert (ours - start(ours.shape)).abs().max() > 0.03  # the comparison is not between two unmoved tensors


def test_training_setup_does_not_import_dynamo():
    """Building and stepping the optimiser, and seeding for CUDA, leave torch._dynamo unimported: its import costs
    1 s, and about 5 s on the GPU machine, whose Python has no bytecode caches, in every stage that trains."""
    code = ("import sys, torch\n"
            "from utils.adam import FusedAdam\n"
            "from utils.runtime import seed_everything\n"
            "p = torch.nn.Parameter(torch.ones(3))\n"
            "opt = FusedAdam([{'params': [p], 'lr': 0.1, 'name': 'means'}])\n"
            "p.grad = torch.ones(3)\n"
            "opt.step()\n"
            "opt.load_state_dict(opt.state_dict())\n"
            "seed_everything(0, torch.device('cuda'))\n"
            "assert float(p[0]) < 1.0\n"
            "print(sorted(m for m in sys.modules if m.startswith('torch._dynamo')))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_zero_grad_and_mismatched_state():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    optimizer = FusedAdam([a, b], lr=0.1)
    a.grad, b.grad = torch.ones(2), torch.ones(3)
    optimizer.zero_grad(set_to_none=False)
    assert torch.equal(a.grad, torch.zeros(2))
    optimizer.zero_grad()
    assert a.grad is None and b.grad is None
    with pytest.raises(ValueError, match="parameter groups"):
        FusedAdam([a], lr=0.1).load_state_dict(optimizer.state_dict())
    with pytest.raises(ValueError, match="empty"):
        FusedAdam([], lr=0.1)


def test_parameters_without_gradient_are_left_alone():
    a, b = torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(4))
    optimizer = FusedAdam([a, b], lr=0.1)
    a.grad = torch.ones(4)
    optimizer.step()
    assert torch.allclose(a.detach(), torch.full((4,), 0.9)) and torch.equal(b.detach(), torch.ones(4))
    assert b not in optimizer.state
    with pytest.raises(ValueError, match="closure"):
        optimizer.step(lambda: 0.0)


def test_state_follows_gsplat_pruning_and_checkpoints():
    """gsplat's `remove` prunes the moments with the rows; a state_dict restores into torch's Adam and back."""
    param = torch.nn.Parameter(torch.randn(10, 3))
    params = torch.nn.ParameterDict({"means": param})
    optimizers = {"means": FusedAdam([{"params": [param], "lr": 1e-2, "name": "means"}], eps=1e-15)}
    for grad in gradients((10, 3), 3):
        params["means"].grad = grad
        optimizers["means"].step()
    keep = torch.arange(10) % 3 != 0
    moments = optimizers["means"].state[params["means"]]["exp_avg"][keep].clone()
    remove(params, optimizers, {}, ~keep)
    state = optimizers["means"].state[params["means"]]
    assert params["means"].shape == (6, 3) and torch.equal(state["exp_avg"], moments)

    saved = copy.deepcopy(optimizers["means"].state_dict())  # a state_dict shares the moment tensors
    twin = torch.nn.Parameter(params["means"].detach().clone())
    torch_adam = torch.optim.Adam([{"params": [twin], "lr": 1e-2, "name": "means"}], eps=1e-15)
    torch_adam.load_state_dict(saved)
    ours = FusedAdam([{"params": [params["means"]], "lr": 1e-2, "name": "means"}], eps=1e-15)
    ours.load_state_dict(copy.deepcopy(torch_adam.state_dict()))
    grad = torch.randn(6, 3)
    twin.grad, params["means"].grad = grad.clone(), grad.clone()
    torch_adam.step()
    ours.step()
    assert torch.allclose(twin.detach(), params["means"].detach(), atol=1e-6)
    assert float(ours.state[params["means"]]["step"]) == 4


@pytest.mark.cuda
def test_gsplat_kernel_matches_torch_adam_on_gpu():
    """On CUDA the update runs in gsplat's kernel (the CPU tests above check the PyTorch-op formula)."""
    grads = [grad.cuda() for grad in gradients((2000, 15, 3), 30, seed=1)]
    lrs = [2.5e-3 * 0.95**i for i in range(30)]
    ours, state = run(FusedAdam, grads, lrs, eps=1e-15, device="cuda")
    theirs, reference = run(torch.optim.Adam, grads, lrs, eps=1e-15, fused=True, device="cuda")
    assert ours.is_cuda and torch.allclose(ours, theirs, rtol=0, atol=1e-6)
    assert torch.allclose(state["exp_avg_sq"], reference["exp_avg_sq"], rtol=1e-5, atol=1e-15)
    assert (ours - start(ours.shape).cuda()).abs().max() > 0.01
