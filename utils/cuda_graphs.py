"""Image-space losses replayed as captured CUDA graphs: a training step's loss terms are ~100 small kernels forward
and backward on images of a fixed size, and launching them one by one from Python costs more host time than the
GPU spends on them. `torch.cuda.make_graphed_callables` captures the forward and the backward once per input
signature; every later call copies the inputs into the captured buffers and launches two graphs.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import Tensor

LossBody = Callable[[dict[str, Tensor]], Tensor]  # named maps -> (T,) weighted loss terms


class GraphedLoss:
    """Weighted loss terms (T,) of named fixed-shape tensors, computed by `body`; on CUDA with `enabled`, replayed
    from graphs captured per signature (names, shapes, dtypes, which inputs require grad).

    Each instance holds one set of captured buffers: a second call before the first call's backward overwrites
    them, so a training step that evaluates the loss twice needs two instances. Without grad mode, on the CPU or
    with `enabled=False`, `body` runs eagerly. The returned tensor is a copy, safe to keep after the next call.
    The gradients it passes back are captured buffers too, so its inputs should be computed tensors (renders), not
    leaves: a leaf's `.grad` would alias a buffer the next call overwrites (pytorch/pytorch#181723).
    """

    def __init__(self, body: LossBody, enabled: bool = True) -> None:
        self.body = body
        self.enabled = enabled
        self._graphs: dict[tuple, Callable[..., Tensor]] = {}

    def __call__(self, maps: dict[str, Tensor]) -> Tensor:
        names = tuple(sorted(maps))
        tensors = tuple(maps[name] for name in names)
        if not (self.enabled and torch.is_grad_enabled() and all(t.is_cuda for t in tensors)):
            return self.body(maps)
        key = (names, tuple((tuple(t.shape), t.dtype, t.requires_grad) for t in tensors))
        graphed = self._graphs.get(key)
        if graphed is None:
            graphed = self._capture(names, tensors)
            self._graphs[key] = graphed
        return graphed(*tensors).clone()

    def _capture(self, names: tuple[str, ...], tensors: tuple[Tensor, ...]) -> Callable[..., Tensor]:
        """Capture `body` (which must not synchronise with the host) on copies of `tensors`."""
        samples = tuple(t.detach().clone().requires_grad_(t.requires_grad) for t in tensors)

        def positional(*args: Tensor) -> Tensor:
            return self.body(dict(zip(names, args)))

        with warnings.catch_warnings():
            # PyTorch 2.11 warned of an AccumulateGrad stream mismatch once per process on an H200, during the first
            # capture (make_graphed_callables warms up and captures on a side stream), not in the replays after it
            warnings.filterwarnings("ignore", message="The AccumulateGrad node's stream does not match")
            return torch.cuda.make_graphed_callables(positional, samples, allow_unused_input=True)  # detached alpha
