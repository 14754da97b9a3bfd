"""Adam for per-surfel parameters, stepped by gsplat's element-wise CUDA kernel.

PyTorch's fused Adam splits a tensor into 65 536-element chunks, one thread block each: a (100k, 15, 3) SH tensor gets
~70 blocks, half an H100's SMs, and each `step()` call costs tens of microseconds of Python before its launch.
gsplat's `adam` kernel runs one thread per element in one launch. It has no bias correction, so `step` folds it into
the learning rate and epsilon (exactly Adam's update):

    lr · m̂ / (√v̂ + ε) = lr_t · m / (√v + ε_t),   lr_t = lr · √(1 - β₂ᵗ) / (1 - β₁ᵗ),   ε_t = ε · √(1 - β₂ᵗ)

The optimiser keeps torch.optim's interface and layout (`param_groups`, `state[param]` with "step" a CPU scalar
tensor, "exp_avg" and "exp_avg_sq" shaped like the parameter, `state_dict` / `load_state_dict`), so gsplat's
densification strategy grows and prunes its state and checkpoints load into either this or `torch.optim.Adam`. It does
not derive from `torch.optim.Optimizer`: that class's first `add_param_group` imports torch._dynamo (1 s, about 5 s
where Python has no bytecode caches), a cost paid by every stage that trains surfels.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable

import torch
from gsplat.cuda._wrapper import adam as gsplat_adam
from torch import Tensor


class FusedAdam:
    """Adam (no weight decay, no amsgrad) whose update runs as one gsplat kernel per CUDA parameter and as the same
    formula in PyTorch ops elsewhere. `params` (tensors, or param-group dicts whose other keys override the
    defaults) and `lr`, `betas`, `eps` as for `torch.optim.Adam`."""

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        params = list(params)
        if not params:
            raise ValueError("FusedAdam got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": 0.0}
        self.param_groups: list[dict[str, Any]] = [{**defaults, **group, "params": list(group["params"])}
                                                   for group in groups]
        self.state: defaultdict[Tensor, dict[str, Tensor]] = defaultdict(dict)

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        """One Adam update of every parameter that has a gradient."""
        if closure is not None:
            raise ValueError("FusedAdam.step takes no closure")
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self._state(param)
                state["step"] += 1
                t = float(state["step"])
                correction2 = math.sqrt(1.0 - beta2**t)
                lr = group["lr"] * correction2 / (1.0 - beta1**t)
                eps = group["eps"] * correction2
                grad = param.grad.contiguous()
                if param.is_cuda and param.is_contiguous():
                    gsplat_adam(param, grad, state["exp_avg"], state["exp_avg_sq"], None, lr, beta1, beta2, eps)
                else:
                    _adam_update(param, grad, state["exp_avg"], state["exp_avg_sq"], lr, beta1, beta2, eps)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of every parameter (set them to None, or zero them in place)."""
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if set_to_none:
                    param.grad = None
                else:
                    param.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        """torch.optim's layout: per-parameter state by index, and the groups with their parameters' indices."""
        index: dict[int, int] = {}
        groups = [{**{k: v for k, v in group.items() if k != "params"},
                   "params": [index.setdefault(id(param), len(index)) for param in group["params"]]}
                  for group in self.param_groups]
        return {"state": {index[id(param)]: state for param, state in self.state.items()}, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Take the groups' settings and the moments of a `state_dict` (this class's or `torch.optim.Adam`'s) for
        the same parameters in the same order; the moments move to each parameter's device and dtype, "step" stays
        a CPU tensor (a torch fused Adam keeps it on the device, where reading it each step would synchronise)."""
        saved = state_dict["param_groups"]
        if [len(g["params"]) for g in saved] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("the saved optimiser state has other parameter groups than this optimiser")
        by_index = {}
        for group, saved_group in zip(self.param_groups, saved):
            by_index |= dict(zip(saved_group["params"], group["params"]))
            group.update({k: v for k, v in saved_group.items() if k != "params"})
        self.state = defaultdict(dict)
        for key, values in state_dict["state"].items():
            param = by_index[key]
            self.state[param] = {name: value.detach().to("cpu", torch.float32) if name == "step"
                                 else value.detach().to(param.device, param.dtype) for name, value in values.items()}

    def _state(self, param: Tensor) -> dict:
        """The parameter's Adam state, created as torch's Adam creates it."""
        state = self.state[param]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state


def _adam_update(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, lr: float, beta1: float,
                 beta2: float, eps: float) -> None:
    """gsplat's kernel in PyTorch ops: moments, then param -= lr · m / (√v + eps), in place."""
    exp_avg.lerp_(grad, 1.0 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    param.addcdiv_(exp_avg, exp_avg_sq.sqrt().add_(eps), value=-lr)
