"""The sharpening check of refitted priors (benchmarks/sharpening.py)."""

import pytest
import torch

from latent_ebm.priors.base import gaussian_log_prob
from tests.conftest import load_script

from .test_refit import _prior


@pytest.fixture(scope="module")
def sharp():
    return load_script("sharpening")


@pytest.mark.parametrize("kind", ["nce", "adaptive", "tre"])
def test_scaling_multiplies_the_whole_log_ratio_and_leaves_the_prior(sharp, kind):
    prior = _prior(kind, stages=3)
    z = torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = prior.log_prob(z) - gaussian_log_prob(z)
        scaled = sharp.scale_ratios(prior, 2.5)
        after = scaled.log_prob(z) - gaussian_log_prob(z)
        assert torch.allclose(after, 2.5 * before, atol=1e-5)
        assert torch.equal(prior.log_prob(z) - gaussian_log_prob(z), before)  # a copy
    assert sharp.spread(scaled, z) == pytest.approx(2.5 * sharp.spread(prior, z), rel=1e-5)
    assert sharp.spread(prior, z) == pytest.approx(before.std().item(), rel=1e-6)
