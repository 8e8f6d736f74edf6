"""The held-out stopping rule of the post-hoc refit (``refit.holdout``, ARCHITECTURE §4)."""

import dataclasses

import pytest
import torch

from latent_ebm import refit as refit_module
from latent_ebm.config import validate
from latent_ebm.errors import LatentEBMError
from latent_ebm.priors.base import Refit, gaussian_log_prob, nce_loss
from latent_ebm.priors.ratio import hold_out

from .conftest import tiny_config
from .test_refit import _prior


def test_hold_out_splits_the_rows_into_two_disjoint_seeded_parts():
    x = torch.arange(100.0).unsqueeze(1)
    fit, held = hold_out(x, 0.2, torch.Generator().manual_seed(0))
    assert (len(fit), len(held)) == (80, 20)
    assert sorted(torch.cat([fit, held]).squeeze(1).tolist()) == x.squeeze(1).tolist()
    again, _ = hold_out(x, 0.2, torch.Generator().manual_seed(0))
    assert torch.equal(fit, again)
    none_fit, none_held = hold_out(x, 0.0, torch.Generator().manual_seed(0))
    assert none_fit is x and len(none_held) == 0
    with pytest.raises(ValueError, match="none to fit"):
        hold_out(x[:1], 0.9, torch.Generator())


def test_fit_stops_after_patience_checks_and_keeps_the_best_weights():
    # Scripted held-out values: the best is the 2nd measurement (update 10 of check=5); the
    # 3 after it are worse, so with patience 3 the fit stops at update 25 and returns to
    # the weights of update 10, bit for bit those of a plain 10-update fit.
    z_q = torch.randn(500, 2, generator=torch.Generator().manual_seed(0)) + 1
    script = iter([3.0, 2.0, 2.5, float("nan"), 2.6, 1.0])
    measured = []

    def held() -> torch.Tensor:
        measured.append(1)
        return torch.tensor(next(script))

    def fit(prior, steps, held=None):
        f = prior.ratios[0]

        def loss(g):
            z = z_q[torch.randint(len(z_q), (100,), generator=g)]
            return nce_loss(f(z), f(torch.randn(100, 2, generator=g)))

        settings = Refit(steps=steps, check=5, patience=3, lr=1e-2)
        return prior._fit([0], loss, settings, torch.Generator().manual_seed(7), "t", False, held)

    stopped, plain = _prior("nce"), _prior("nce")
    out = fit(stopped, 100, held)
    assert (out.updates, out.held, len(measured)) == (10, 2.0, 5)
    assert fit(plain, 10).updates == 10 and fit(plain, 10).held is None
    fit(plain, 10)
    for a, b in zip(stopped.parameters(), plain.parameters(), strict=True):
        assert torch.equal(a, b)
        assert not a.requires_grad


@pytest.mark.parametrize("kind", ["nce", "adaptive", "tre"])
def test_stopping_rule_prevents_overfitting_a_few_rows(kind):
    # 60 rows of q = N(m, I) and 3,000 updates (a stage) at a high learning rate: the plain
    # refit memorises the rows, and the NCE loss of the prior's log-ratio on fresh samples of
    # q against N(0, I) rises above that of the refit stopped by held-out rows, whose stages
    # also ran fewer updates.
    m = torch.tensor([1.0, -1.0])
    z_q = torch.randn(60, 2, generator=torch.Generator().manual_seed(0)) + m
    base = Refit(steps=3000, per_stage=True, batch=60, lr=1e-2, chain_steps=30, noise=2000)
    fresh_q = torch.randn(20000, 2, generator=torch.Generator().manual_seed(1)) + m
    fresh_p = torch.randn(20000, 2, generator=torch.Generator().manual_seed(2))
    fresh = {}
    for name, settings in [
        ("plain", base),
        ("stopped", dataclasses.replace(base, holdout=0.3, check=50, patience=4)),
    ]:
        prior = _prior(kind, stages=2)
        prior.refit(z_q, settings)
        with torch.no_grad():  # the prior's whole log-ratio against N(0, I) as the classifier
            f = [prior.log_prob(z) - gaussian_log_prob(z) for z in (fresh_q, fresh_p)]
            fresh[name] = nce_loss(*f).item()
        if name == "stopped":
            assert all(fit.updates < 3000 and fit.held is not None for fit in prior.last_refit)
        else:
            assert all(fit.updates == 3000 and fit.held is None for fit in prior.last_refit)
    assert fresh["stopped"] < fresh["plain"] - 0.5


def test_holdout_config_reaches_the_refit_settings_and_is_checked():
    s = refit_module.refit_settings(
        tiny_config("refit.holdout=0.2", "refit.check=100", "refit.patience=2")
    )
    assert (s.holdout, s.check, s.patience) == (0.2, 100, 2)
    assert refit_module.refit_settings(tiny_config()).holdout == 0.0
    for bad, field in [
        ("refit.holdout=1.0", "refit\\.holdout"),
        ("refit.holdout=-0.1", "refit\\.holdout"),
        ("refit.check=0", "refit\\.check"),
        ("refit.patience=0", "refit\\.patience"),
    ]:
        with pytest.raises(LatentEBMError, match=field):
            validate(tiny_config(bad))
