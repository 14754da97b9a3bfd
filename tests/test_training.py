"""The divergence guard shared by stages 2 and 4 (`training.loop.FiniteGuard`)."""
from __future__ import annotations

import math

import pytest
import torch

from training.loop import FiniteGuard, TrainingDiverged


def test_guard_returns_the_mean_since_the_last_check_and_starts_again() -> None:
    guard = FiniteGuard(every=3, entries="states")
    assert guard.check(0) is None
    for value in ([1.0, 2.0], [3.0, 4.0]):
        guard.update(torch.tensor(value))
    torch.testing.assert_close(guard.check(2), torch.tensor([2.0, 3.0]))
    guard.update(torch.tensor([5.0, 7.0]))
    torch.testing.assert_close(guard.check(3), torch.tensor([5.0, 7.0]))
    assert guard.check(4) is None


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_guard_names_the_entry_that_was_not_finite_even_after_finite_ones(bad: float) -> None:
    guard = FiniteGuard(entries="states")
    guard.update(torch.tensor([1.0, bad]))
    guard.update(torch.tensor([1.0, 1e30]))
    with pytest.raises(TrainingDiverged, match=r"iteration 7 \(states \[1\]\)"):
        guard.check(7)


def test_guard_of_a_scalar_and_its_values_are_not_kept_by_reference() -> None:
    guard = FiniteGuard()
    value = torch.tensor(2.0)
    guard.update(value)
    value.fill_(math.nan)  # a later in-place change of the caller's tensor is not seen
    guard.update(torch.tensor(4.0))
    assert guard.check(1).item() == pytest.approx(3.0)
    guard.update(torch.tensor(math.nan))
    with pytest.raises(TrainingDiverged, match="iteration 2$"):
        guard.check(2)
