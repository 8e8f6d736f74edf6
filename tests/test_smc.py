"""SMC along a path of densities (latent_ebm/smc.py, issue 31): log Z against exact answers."""

from __future__ import annotations

import math

import pytest
import torch

from latent_ebm.errors import LatentEBMError
from latent_ebm.smc import smc_log_normalisers, smc_log_z, tempered

D = 16
A = 0.25  # f_1 = -(A/2)||z||^2 + C1: p_1 = N(0, I / (1 + A))
C1 = 0.3
B = torch.full((D,), math.sqrt(0.5 / D))  # f_2 = B.z: p_2 = N(B / (1 + A), I / (1 + A))
MIX_W = (0.3, 0.7)  # f_3 = log sum_j w_j exp(-(c_j/2)||z - mu_j||^2)
MIX_C = (0.2, 0.1)
MIX_MU = (torch.cat([torch.ones(2), torch.zeros(D - 2)]), -0.5 * torch.ones(D))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _f1(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * A * z.pow(2).sum(-1) + C1


def _f2(z: torch.Tensor) -> torch.Tensor:
    return z @ B


def _f3(z: torch.Tensor) -> torch.Tensor:
    parts = [
        math.log(w) - 0.5 * c * (z - mu).pow(2).sum(-1)
        for w, c, mu in zip(MIX_W, MIX_C, MIX_MU, strict=True)
    ]
    return torch.logsumexp(torch.stack(parts), 0)


def _exact() -> list[float]:
    """log Z_0..3 in closed form. E_{N(m, vI)}[exp(-(c/2)||z - mu||^2)]
    = (1 + cv)^{-D/2} exp(-c ||m - mu||^2 / (2 (1 + cv)))."""
    v = 1 / (1 + A)
    log_z1 = -D / 2 * math.log(1 + A) + C1
    log_z2 = log_z1 + B.pow(2).sum().item() * v / 2
    m = B * v
    mix = sum(
        w * (1 + c * v) ** (-D / 2) * math.exp(-c * (m - mu).pow(2).sum().item() / (2 + 2 * c * v))
        for w, c, mu in zip(MIX_W, MIX_C, MIX_MU, strict=True)
    )
    return [0.0, log_z1, log_z2, log_z2 + math.log(mix)]


def test_standard_normal_is_exactly_normalised():
    """No ratio, or ratios that are 0: log Z is exactly 0 at every stage, ESS stays N."""
    alone = smc_log_normalisers([], D, 100, generator=_gen(0))
    assert alone.log_z.tolist() == [0.0]
    zero = smc_log_normalisers([lambda z: z.sum(-1) * 0.0] * 3, D, 100, generator=_gen(0))
    assert zero.log_z.tolist() == [0.0] * 4
    assert torch.allclose(zero.ess, torch.full((4,), 100.0, dtype=torch.float64))
    assert not zero.resampled.any()
    assert torch.allclose(zero.weights, torch.full((100,), 0.01, dtype=torch.float64))


def test_gaussian_and_mixture_ratios_match_closed_form():
    """A Gaussian, a linear and a Gaussian-mixture ratio in d = 16: every stage's log Z within
    0.05 nats of the closed form, and the error is smaller with 16x more particles."""
    exact = torch.tensor(_exact(), dtype=torch.float64)
    big = smc_log_normalisers([_f1, _f2, _f3], D, 4000, generator=_gen(1))
    assert (big.log_z - exact).abs().max() < 0.05, (big.log_z, exact)
    assert torch.isclose(big.weights.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert big.particles.shape == (4000, D)
    # Error shrinks with more particles (mean over seeds of the largest stage error).
    small = [
        (smc_log_normalisers([_f1, _f2, _f3], D, 250, generator=_gen(s)).log_z - exact).abs().max()
        for s in range(4)
    ]
    large = [
        (smc_log_normalisers([_f1, _f2, _f3], D, 4000, generator=_gen(s)).log_z - exact).abs().max()
        for s in range(10, 14)
    ]
    assert sum(large) < sum(small) / 2, (small, large)


def test_standard_error_of_repeats_covers_the_truth():
    exact = torch.tensor(_exact(), dtype=torch.float64)
    mean, se = smc_log_z([_f1, _f2, _f3], D, 500, repeats=6, generator=_gen(2))
    assert (se[1:] > 0).all()
    assert ((mean - exact).abs() <= 4 * se + 1e-3).all(), (mean, se, exact)


def test_resampling_happens_when_ess_falls():
    """A sharp ratio collapses the ESS below the threshold: the particles are resampled and
    the weights reset to uniform."""
    res = smc_log_normalisers([lambda z: -4.0 * z.pow(2).sum(-1)], D, 500, generator=_gen(3))
    assert res.ess[1] < 250 and bool(res.resampled[1])
    assert torch.allclose(res.weights, torch.full((500,), 1 / 500, dtype=torch.float64))


def test_tempered_path_matches_closed_form():
    """exp(beta f) for f = -(a/2)||z||^2, beta on 0..1 in 10 steps:
    log Z(beta) = -(D/2) log(1 + a beta) at every stage."""
    a = 1.0
    betas = [j / 10 for j in range(11)]
    path = tempered(lambda z: -0.5 * a * z.pow(2).sum(-1), betas)
    res = smc_log_normalisers(path, D, 4000, step_size=0.5, generator=_gen(4))
    exact = torch.tensor([-D / 2 * math.log(1 + a * b) for b in betas], dtype=torch.float64)
    assert (res.log_z - exact).abs().max() < 0.05, (res.log_z, exact)


@pytest.mark.parametrize("betas", [[0.1, 1.0], [0.0, 0.5, 0.5, 1.0], []])
def test_tempered_refuses_a_bad_grid(betas):
    with pytest.raises(LatentEBMError, match="must start at 0 and increase"):
        tempered(lambda z: z.sum(-1), betas)


def test_bad_settings_and_increments_are_refused():
    with pytest.raises(LatentEBMError, match="particles"):
        smc_log_normalisers([], D, 0, generator=_gen(0))
    with pytest.raises(LatentEBMError, match="ESS threshold"):
        smc_log_normalisers([], D, 10, ess_threshold=2.0, generator=_gen(0))
    with pytest.raises(LatentEBMError, match="NaN"):
        smc_log_normalisers([lambda z: z.sum(-1) * math.nan], D, 10, generator=_gen(0))
    with pytest.raises(LatentEBMError, match="repeats"):
        smc_log_z([], D, 10, repeats=1, generator=_gen(0))


def test_adaptive_tempering_spends_steps_where_a_ratio_is_sharp():
    """A sharp Gaussian ratio (p_1 = N(0, I / 41), log Z_1 = -(D/2) log 41) gets many more
    tempering steps than a flat one, and both log Z are right within 0.05 nats."""
    from latent_ebm.smc import smc_adaptive

    sharp = smc_adaptive(
        [lambda z: -20.0 * z.pow(2).sum(-1)], D, 2000, generator=_gen(0), min_steps=5
    )
    flat = smc_adaptive([_f1], D, 2000, generator=_gen(1), min_steps=5)
    assert flat.steps.tolist() == [0, 5]
    assert sharp.steps[1] > 2 * flat.steps[1]  # the adaptive steps beyond the 5 asked for
    assert sharp.log_z[1].item() == pytest.approx(-D / 2 * math.log(41), abs=0.15)
    assert flat.log_z[1].item() == pytest.approx(_exact()[1], abs=0.05)
    with pytest.raises(LatentEBMError, match="more than 3 tempering steps"):
        smc_adaptive([lambda z: -20.0 * z.pow(2).sum(-1)], D, 200, generator=_gen(2), max_steps=3)


def test_the_convergence_check_flags_a_path_the_moves_cannot_follow():
    """Without moves, with few particles, a sharp ratio's log Z depends on the number of
    tempering steps: prior_normalisers reports it as not converged; with moves it converges."""
    from latent_ebm.evaluation.likelihood import prior_normalisers
    from latent_ebm.evaluation.request import SMCSettings
    from latent_ebm.priors.base import Prior

    class Sharp(Prior):
        def __init__(self):
            super().__init__(D)
            self.anchor = torch.nn.Parameter(torch.zeros(()))

        def stage_log_ratios(self):
            return [lambda z: -20.0 * (z - 1.0).pow(2).sum(-1)]

    exact = -D / 2 * math.log(41) - 20.0 * D / 41  # E_N[exp(-20 ||z - 1||^2)]
    stuck = prior_normalisers(Sharp(), SMCSettings(particles=100, repeats=2, moves=0))
    assert not stuck.converged and stuck.log_z[1].item() < exact - 1
    good = prior_normalisers(Sharp(), SMCSettings(particles=4000, repeats=3, moves=10))
    assert good.converged and good.log_z[1].item() == pytest.approx(exact, abs=0.15)
