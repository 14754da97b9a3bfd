"""Wall time per named phase of a stage and its peak GPU memory, for the 'where does the time go' lines of logs and
summaries."""
from __future__ import annotations

import time

import torch


class PhaseTimer:
    """Seconds per phase: `mark(name)` charges the time since the previous mark to `name`. On CUDA it synchronises
    first, so GPU work queued by a phase is charged to it and not to the next phase that reads a result back."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self, name: str) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self._last = now

    def total(self, *names: str) -> float:
        """Seconds charged to the phases `names` so far (0 for a phase never marked)."""
        return sum(self.seconds.get(name, 0.0) for name in names)

    def summary(self) -> str:
        """'load 1.2 s, meshes 3.4 s, ...' in the order the phases were first marked."""
        return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.seconds.items())


def peak_gpu_memory_gib(device: torch.device) -> float | None:
    """GiB of GPU memory that torch's allocator held at its peak in this process so far (what a stage needs of the
    GPU); None on the CPU."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def memory_note(gib: float | None) -> str:
    """', peak GPU memory 1.23 GiB' for a log line, or '' without a figure (a CPU run)."""
    return "" if gib is None else f", peak GPU memory {gib:.2f} GiB"
