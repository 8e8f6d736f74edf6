"""Likelihoods of a prior and of the model (issue 31): normalising constants of priors, the
prior NLL by stage, log p(x) of a linear-Gaussian generator against its closed form, the SMC
sampler against exact samples, and the commands with their bad options."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from latent_ebm.data import load_dataset, to_float
from latent_ebm.evaluation.likelihood import (
    bits_per_dim,
    log_px,
    prior_nll,
    prior_normalisers,
)
from latent_ebm.evaluation.request import SMCSettings
from latent_ebm.model import LatentEBM
from latent_ebm.priors import Prior
from latent_ebm.priors.adaptive import AdaptivePrior
from latent_ebm.priors.gaussian import GaussianPrior
from latent_ebm.sampling import smc_samples, smc_schedule
from tests.conftest import assert_one_line, run_cli

FAST = SMCSettings(particles=2000, repeats=3, temperatures=5, moves=3)


def _gaussian_nll(z: torch.Tensor) -> float:
    return float(0.5 * z.pow(2).sum(-1).mean() + 0.5 * z.shape[1] * math.log(2 * math.pi))


class _Toy(Prior):
    """A prior given by its log-ratios (or, with ``ratios=None``, by ``relative``, annealed)."""

    def __init__(self, nz, ratios=None, relative=None):
        super().__init__(nz)
        self._ratios, self._relative = ratios, relative
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # a device for the SMC runs

    def stage_log_ratios(self):
        return super().stage_log_ratios() if self._ratios is None else self._ratios

    def log_prob(self, z):
        rel = self._relative(z) if self._ratios is None else sum(f(z) for f in self._ratios)
        return rel - 0.5 * z.pow(2).sum(-1)


def test_gaussian_prior_is_exactly_normalised():
    """N(0, I): log Z = 0 exactly, and its NLL is the closed-form Gaussian cross-entropy."""
    prior = GaussianPrior(6)
    norm = prior_normalisers(prior, FAST)
    assert norm.log_z.tolist() == [0.0] and norm.se.tolist() == [0.0]
    z = torch.randn(500, 6)
    (stage,) = prior_nll(prior, z, norm)
    assert stage["nll"] == pytest.approx(_gaussian_nll(z), rel=1e-6)


def test_constant_ratios_have_exact_log_z_at_every_stage():
    """A trained-prior class whose ratio networks output constants c_k: log Z_k = c_1 + ...
    + c_k exactly, and every stage's normalised density is N(0, I)."""
    prior = AdaptivePrior(5, stages=3, hidden=8)
    consts = [0.7, -1.2, 2.5]
    with torch.no_grad():
        for net, c in zip(prior.ratios, consts, strict=True):
            for p in net.parameters():
                p.zero_()
            net.net[-1].bias.fill_(c)
    prior.stage.fill_(3)  # every ratio in the prior, as after training
    assert len(prior.stage_log_ratios()) == 3
    norm = prior_normalisers(prior, FAST)
    assert norm.log_z.tolist() == pytest.approx([0.0, 0.7, -0.5, 2.0], abs=1e-6)
    z = torch.randn(400, 5)
    for stage in prior_nll(prior, z, norm):
        assert stage["nll"] == pytest.approx(_gaussian_nll(z), abs=1e-5)


def test_gaussian_ratios_log_z_and_nll_against_closed_form():
    """Two Gaussian ratios in d = 16 (p_1 = N(0, I/(1+a)), p_2 = N(b/(1+a), I/(1+a))):
    log Z_k within 0.05 nats, and the NLL of exact p_2 samples equals p_2's entropy."""
    d, a = 16, 0.3
    b = torch.full((d,), 0.2)
    prior = _Toy(d, ratios=[lambda z: -0.5 * a * z.pow(2).sum(-1), lambda z: z @ b])
    log_z1 = -d / 2 * math.log(1 + a)
    exact = [0.0, log_z1, log_z1 + b.pow(2).sum().item() / (2 * (1 + a))]
    norm = prior_normalisers(prior, FAST)
    assert norm.log_z.tolist() == pytest.approx(exact, abs=0.05)
    z = b / (1 + a) + torch.randn(20_000, d) / math.sqrt(1 + a)
    entropy = 0.5 * d * (1 + math.log(2 * math.pi / (1 + a)))
    assert prior_nll(prior, z, norm)[-1]["nll"] == pytest.approx(entropy, abs=0.1)


def test_prior_without_stages_is_annealed():
    """A prior that is not a product of ratios (like lebm) is annealed in beta: one stage."""
    d, a = 8, 1.5
    prior = _Toy(d, relative=lambda z: -0.5 * a * z.pow(2).sum(-1) + 0.4)
    norm = prior_normalisers(prior, FAST)
    assert len(norm.log_z) == 2
    assert norm.log_z[1].item() == pytest.approx(-d / 2 * math.log(1 + a) + 0.4, abs=0.05)


class _Linear(torch.nn.Module):
    """g(z) = W z + c as a 1x4x4 image."""

    def __init__(self, w, c):
        super().__init__()
        self.w, self.c = torch.nn.Parameter(w), torch.nn.Parameter(c)

    def forward(self, z):
        return (z @ self.w.T + self.c).view(-1, 1, 4, 4)


def test_log_px_of_probabilistic_pca_matches_closed_form():
    """A linear-Gaussian generator with a N(0, I) prior: p(x) = N(c, W W^T + sigma^2 I).
    The importance-sampling estimate is within 0.1 nats per image of it."""
    g = torch.Generator().manual_seed(0)
    nz, sigma = 3, 0.2
    w = 0.3 * torch.randn(16, nz, generator=g)
    c = 0.2 * torch.randn(16, generator=g)
    model = LatentEBM(_Linear(w, c), GaussianPrior(nz), sigma)
    x = torch.randn(40, nz, generator=g) @ w.T + c + sigma * torch.randn(40, 16, generator=g)
    images = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).view(-1, 1, 4, 4)
    exact = torch.distributions.MultivariateNormal(c, w @ w.T + sigma**2 * torch.eye(16))
    truth = exact.log_prob(to_float(images).view(-1, 16).double().float())
    values, ess = log_px(
        model, images, 0.0, chains=8, samples=1000, steps=50, step_size=0.05, batch_size=20
    )
    assert (values - truth.double()).abs().max() < 0.1
    assert float(ess.mean()) > 100  # a near-exact Laplace proposal on a Gaussian posterior
    # bits per dimension: the continuous NLL plus the 8-bit bins' volume
    assert bits_per_dim(0.0, 16) == pytest.approx(math.log2(127.5))


def _energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())


def _two_sample_p(a: torch.Tensor, b: torch.Tensor, g: torch.Generator, perms: int = 200) -> float:
    """Permutation p-value of the energy distance between samples ``a`` and ``b``."""
    both, observed = torch.cat([a, b]), _energy_distance(a, b)
    hits = 0
    for _ in range(perms):
        idx = torch.randperm(len(both), generator=g)
        hits += _energy_distance(both[idx[: len(a)]], both[idx[len(a) :]]) >= observed
    return (hits + 1) / (perms + 1)


def test_smc_samples_of_a_two_mode_prior_match_exact_samples():
    """p = N(0, I) r with r making p an equal mixture of N(+-m, 0.25 I) in d = 2: SMC samples
    pass an energy-distance two-sample test against exact samples, and the test rejects
    samples from only one mode (so it can fail)."""
    d, m, s = 2, torch.tensor([2.0, 0.0]), 0.5

    def log_mix(z):
        parts = [-0.5 * (z - c).pow(2).sum(-1) / s**2 for c in (m, -m)]
        return torch.logsumexp(torch.stack(parts), 0) - math.log(2) - d * math.log(s)

    prior = _Toy(d, ratios=[lambda z: log_mix(z) + 0.5 * z.pow(2).sum(-1)])
    g = torch.Generator().manual_seed(1)
    z, info = smc_samples(prior, 600, 200, 0.3, g)
    signs = torch.where(torch.rand(600, generator=g) < 0.5, 1.0, -1.0)[:, None]
    exact = signs * m + s * torch.randn(600, d, generator=g)
    one_mode = m + s * torch.randn(600, d, generator=g)
    assert _two_sample_p(z, exact, g) > 0.01
    assert _two_sample_p(one_mode, exact, g) < 0.01
    assert abs((z[:, 0] > 0).float().mean().item() - 0.5) < 0.1
    assert info["gradient_evaluations"] <= 200 and info["ess"] > 100


def test_smc_schedule_spends_the_budget():
    for k, steps in [(1, 100), (4, 100), (4, 12), (2, 500)]:
        t, moves = smc_schedule(k, steps)
        assert t >= 1 and moves >= 1
        assert t * k * (moves + 1) <= max(steps, 2 * k)


def test_likelihood_commands_on_a_run(tiny_run, capsys):
    """eval --metric prior-nll and nll, sample --method smc and eval fid --method smc and
    --features classifier2 on a tiny adaptive run (K = 2): reports with every stage."""
    code, out, err = run_cli(
        ["eval", tiny_run, "--metric", "prior-nll", "--particles", "200", "--no-progress"],
        capsys,
    )
    assert code == 0, err
    report = json.loads((tiny_run / "eval" / "prior-nll.json").read_text())
    assert [s["stage"] for s in report["stages"]] == [0, 1, 2]
    assert report["stages"][0]["log_z"] == 0.0 and report["se"] > 0
    assert report["value"] == report["stages"][-1]["nll"]
    assert "by stage" in out
    fast = ["--particles", "100", "--samples", "20", "--chains", "2", "--no-progress"]
    code, out, err = run_cli(["eval", tiny_run, "--metric", "nll", *fast], capsys)
    assert code == 0, err
    report = json.loads((tiny_run / "eval" / "nll.json").read_text())
    assert report["bits_per_dim"] == pytest.approx(bits_per_dim(report["value"], 64))
    assert report["n"] == len(load_dataset("digits").test_x)  # every test image by default
    code, _, err = run_cli(["eval", tiny_run, "--metric", "nll", "--n", "7", *fast], capsys)
    assert code == 0 and json.loads((tiny_run / "eval" / "nll.json").read_text())["n"] == 7, err
    assert math.isfinite(report["value"]) and report["ess"] >= 1
    code, out, err = run_cli(
        ["sample", tiny_run, "--n", "16", "--method", "smc", "--no-progress"], capsys
    )
    assert code == 0 and (tiny_run / "samples" / "smc.npz").exists(), err
    with np.load(tiny_run / "samples" / "smc.npz") as f:
        assert 1 <= f["ess"].sum() <= 16 and int(f["gradient_evaluations"]) <= 5
    assert "SMC: effective sample size" in out
    fid = ["eval", tiny_run, "--metric", "fid", "--n", "50", "--method", "smc", "--no-progress"]
    code, out, err = run_cli([*fid, "--features", "classifier2"], capsys)
    assert code == 0, err
    report = json.loads((tiny_run / "eval" / "fid-smc-classifier2.json").read_text())
    assert report["features"]["name"] == "classifier2"
    assert 0 < report["settings"]["ess_fraction"] <= 1
    assert report["settings"]["gradient_evaluations"] <= 5  # the run's sample.steps
    # Another chain length gets its own report: the run's own FID is not overwritten.
    code, out, err = run_cli([*fid[:-3], "--steps", "3", "--no-progress"], capsys)
    assert code == 0 and "fid-3steps.json" in out, err
    assert json.loads((tiny_run / "eval" / "fid-3steps.json").read_text())["settings"]["steps"] == 3
    assert not (tiny_run / "eval" / "fid.json").exists()


@pytest.mark.parametrize(
    "option, expected",
    [
        (["--particles", "1"], "--particles"),
        (["--repeats", "1"], "--repeats"),
        (["--temperatures", "0"], "--temperatures"),
        (["--moves", "-1"], "--moves"),
        (["--chains", "1"], "--chains"),
        (["--samples", "0"], "--samples"),
        (["--n", "0"], "--n must be a whole number >= 1 for nll"),
        (["--features", "vgg"], "--features"),
        (["--sharpen", "0"], "--sharpen"),
    ],
)
def test_bad_likelihood_options_are_one_line(tmp_path, capsys, option, expected):
    """Checked before the run is read: a missing run folder is not reached."""
    metric = "fid" if option[0] == "--features" else "nll"
    code, _, err = run_cli(["eval", tmp_path / "none", "--metric", metric, *option], capsys)
    assert_one_line(code, err, expected)
