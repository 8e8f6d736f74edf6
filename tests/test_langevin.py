"""The chain function on a target with a known answer, and the NCE loss on two Gaussians."""

import math

import torch

from latent_ebm.errors import ChainDivergedError
from latent_ebm.langevin import langevin
from latent_ebm.nets import RatioNet
from latent_ebm.priors import nce_loss

MEAN = torch.tensor([1.0, -2.0])
COV = torch.tensor([[1.0, 0.8], [0.8, 1.0]])


def test_langevin_recovers_correlated_gaussian():
    precision = torch.linalg.inv(COV)

    def log_prob(z):
        d = z - MEAN
        return -0.5 * ((d @ precision) * d).sum(-1)

    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(4000, 2, generator=g)
    z = langevin(z0, log_prob, 2000, 0.1, randn=lambda step: torch.randn(4000, 2, generator=g))
    assert torch.allclose(z.mean(0), MEAN, atol=0.06)
    # Unadjusted Langevin inflates the variance by O(s^2): about 1% at s = 0.1 here.
    assert torch.allclose(torch.cov(z.T), COV, atol=0.06)


def test_langevin_without_noise_is_gradient_ascent_and_returns_trajectory():
    z0 = torch.tensor([[3.0, -1.0]])
    z, traj = langevin(z0, lambda z: -0.5 * z.pow(2).sum(-1), 3, 1.0, noise=False, trajectory=True)
    # z <- z + 0.5 * (-z) = z / 2 per step.
    assert torch.allclose(z, z0 / 8)
    assert traj.shape == (4, 1, 2)
    assert torch.allclose(traj[1], z0 / 2)


def test_langevin_reports_diverged_rows():
    stiffness = torch.tensor([1.0, 1e30, 1.0])  # row 1 overflows to Inf within two steps

    def log_prob(z):
        return -(stiffness * z.pow(2).sum(-1))

    z0 = torch.ones(3, 2)
    try:
        langevin(z0, log_prob, 2, 0.1, noise=False)
    except ChainDivergedError as e:
        assert "rows 1)" in str(e) and "1 of 3 rows" in str(e)
    else:
        raise AssertionError("no error")


def test_nce_recovers_analytic_log_ratio_of_two_gaussians():
    """f trained by Eq. 4 between q = N(mu, s^2 I) and p = N(0, I) converges to log q/p."""
    torch.manual_seed(0)
    mu, s = torch.tensor([1.0, -0.5]), 0.7

    def log_ratio(z):
        log_q = -0.5 * ((z - mu) / s).pow(2).sum(-1) - 2 * math.log(s)
        return log_q + 0.5 * z.pow(2).sum(-1)

    f = RatioNet(2, 64)
    opt = torch.optim.Adam(f.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 4000)
    for _ in range(4000):
        zq = mu + s * torch.randn(512, 2)
        zp = torch.randn(512, 2)
        loss = nce_loss(f(zq), f(zp))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    held_out = torch.cat([mu + s * torch.randn(2000, 2), torch.randn(2000, 2)])
    with torch.no_grad():
        rmse = (f(held_out) - log_ratio(held_out)).pow(2).mean().sqrt().item()
    print(f"NCE log-ratio RMSE on held-out points: {rmse:.4f}")
    assert rmse < 0.15
    assert math.isclose(
        nce_loss(torch.zeros(3), torch.zeros(5)).item(), 2 * math.log(2), rel_tol=1e-6
    )
