"""Stage accounting (`utils.timing`): seconds per phase, and the peak GPU memory the summaries report."""
from __future__ import annotations

import time

import pytest
import torch

from utils.timing import PhaseTimer, memory_note, peak_gpu_memory_gib


def test_phase_timer_charges_each_phase_the_time_since_the_previous_mark() -> None:
    timer = PhaseTimer(torch.device("cpu"))
    time.sleep(0.05)
    timer.mark("load")
    timer.mark("iterations")
    time.sleep(0.02)
    timer.mark("load")
    assert list(timer.seconds) == ["load", "iterations"]
    assert 0.07 <= timer.seconds["load"] < 0.5 and timer.seconds["iterations"] < 0.02
    assert timer.summary().startswith("load 0.")
    assert timer.total("load", "iterations", "never marked") == timer.seconds["load"] + timer.seconds["iterations"]


def test_peak_gpu_memory_is_none_on_the_cpu() -> None:
    assert peak_gpu_memory_gib(torch.device("cpu")) is None
    assert memory_note(None) == "" and memory_note(1.234) == ", peak GPU memory 1.23 GiB"


@pytest.mark.cuda
def test_peak_gpu_memory_counts_an_allocation() -> None:
    device = torch.device("cuda")
    torch.cuda.reset_peak_memory_stats(device)
    before = peak_gpu_memory_gib(device)
    block = torch.empty(2**28, dtype=torch.uint8, device=device)  # 0.25 GiB
    assert before + 0.25 <= peak_gpu_memory_gib(device) < before + 0.3
    del block
