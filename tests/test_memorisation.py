"""The memorisation check of refitted priors (benchmarks/memorisation.py)."""

import pytest
import torch

from tests.conftest import load_script


@pytest.fixture(scope="module")
def memo():
    return load_script("memorisation")


def test_copies_of_the_fitted_rows_give_zero_and_fresh_samples_about_one(memo):
    g = torch.Generator().manual_seed(0)
    fitted, unseen = torch.randn(2000, 4, generator=g), torch.randn(2000, 4, generator=g)
    copies = fitted[torch.randint(2000, (1000,), generator=g)]
    assert memo.memorisation(copies, fitted, unseen)["ratio"] == 0.0
    fresh = memo.memorisation(torch.randn(1000, 4, generator=g), fitted, unseen)
    assert fresh["ratio"] == pytest.approx(1.0, abs=0.05)
    assert fresh["to_fitted"] > 0.3  # nearest of 2,000 standard normal rows in 4-D


def test_nearest_is_the_median_nearest_distance_in_any_chunking(memo):
    rows = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    samples = torch.tensor([[1.0, 0.0], [9.0, 0.0], [0.0, 3.0]])  # nearest: 1, 1, 3
    assert memo.nearest(samples, rows).item() == 1.0
    assert memo.nearest(samples, rows, chunk=1).item() == 1.0
