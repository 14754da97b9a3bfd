"""Pure tensor functions replayed as captured CUDA graphs: a training step's loss terms, or its deformation of every
surfel, are ~100 small kernels forward and backward, and launching them one by one from Python costs more host time
than the GPU spends on them. `torch.cuda.make_graphed_callables` captures the forward and the backward once per input
signature; every later call copies the inputs into the captured buffers and launches two graphs.
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Callable

import torch
from torch import Tensor

Outputs = Tensor | tuple[Tensor, ...]
Body = Callable[[dict[str, Tensor]], Outputs]  # named tensors -> a tensor or a tuple of tensors


class GraphedFunction:
    """`body` of named tensors; on CUDA with `enabled`, replayed from graphs captured per signature (names, shapes,
    dtypes, which inputs require grad), at most `max_graphs` of them kept (the least recently used is dropped: a
    function of the surfels meets a new size after every densification step).

    Each instance holds one set of captured buffers: a second call before the first call's backward overwrites
    them, so a training step that evaluates a function twice needs two instances. Without grad mode, on the CPU or
    with `enabled=False`, `body` runs eagerly. The returned tensors are copies, safe to keep after the next call.
    `body` must not synchronise with the host, and its outputs must depend on an input that requires grad. The
    gradients passed back are captured buffers too: a leaf input's `.grad` may alias one (pytorch/pytorch#181723),
    so such a gradient must be consumed (optimiser step, then cleared) before the next call.
    """

    def __init__(self, body: Body, enabled: bool = True, max_graphs: int | None = None) -> None:
        self.body = body
        self.enabled = enabled
        self.max_graphs = max_graphs
        self._graphs: OrderedDict[tuple, Callable[..., Outputs]] = OrderedDict()

    def __call__(self, inputs: dict[str, Tensor]) -> Outputs:
        names = tuple(sorted(inputs))
        tensors = tuple(inputs[name] for name in names)
        if not (self.enabled and torch.is_grad_enabled() and all(t.is_cuda for t in tensors)):
            return self.body(inputs)
        key = (names, tuple((tuple(t.shape), t.dtype, t.requires_grad) for t in tensors))
        graphed = self._graphs.get(key)
        if graphed is None:
            if self.max_graphs is not None and len(self._graphs) >= self.max_graphs:
                self._graphs.popitem(last=False)
            graphed = self._capture(names, tensors)
            self._graphs[key] = graphed
        self._graphs.move_to_end(key)
        out = graphed(*tensors)
        return tuple(t.clone() for t in out) if isinstance(out, tuple) else out.clone()

    def _capture(self, names: tuple[str, ...], tensors: tuple[Tensor, ...]) -> Callable[..., Outputs]:
        """Capture `body` on copies of `tensors`."""
        samples = tuple(t.detach().clone().requires_grad_(t.requires_grad) for t in tensors)

        def positional(*args: Tensor) -> Outputs:
            return self.body(dict(zip(names, args)))

        with warnings.catch_warnings():
            # PyTorch 2.11 warned of an AccumulateGrad stream mismatch once per process on an H200, during the first
            # capture (make_graphed_callables warms up and captures on a side stream), not in the replays after it
            warnings.filterwarnings("ignore", message="The AccumulateGrad node's stream does not match")
            return torch.cuda.make_graphed_callables(positional, samples, allow_unused_input=True)  # detached alpha
