"""The exact prior sampler (MALA) and the post-hoc refit of the ratio priors (ARCHITECTURE §4)."""

import dataclasses
import math
import sys

import pytest
import torch
import yaml

from latent_ebm import refit as refit_module
from latent_ebm import rng
from latent_ebm.config import validate
from latent_ebm.errors import LatentEBMError
from latent_ebm.langevin import langevin, mala
from latent_ebm.model import build_model
from latent_ebm.priors import PRIORS
from latent_ebm.priors.base import Refit, gaussian_log_prob
from latent_ebm.sampling import sample_latents
from latent_ebm.train import train

from .conftest import assert_same_state, checkpoint_state, tiny_config

SIGMA = 0.5  # target N(1, SIGMA^2 I) in 2-D


def _target(z: torch.Tensor) -> torch.Tensor:
    return -(z - 1).pow(2).sum(-1) / (2 * SIGMA**2)


def test_mala_samples_the_target_where_langevin_is_biased():
    # Unadjusted Langevin with step s on N(m, sigma^2) has stationary variance
    # sigma^2 / (1 - s^2 / (4 sigma^2)): 0.333 for s = 0.5, a third too wide. MALA is exact.
    z0 = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0)) * 3
    g = torch.Generator().manual_seed(1)
    ula = langevin(z0, _target, 400, 0.5, randn=lambda _: torch.randn(4000, 2, generator=g))
    z, acc = mala(z0, _target, 600, 0.5, generator=g, adapt=0)
    expected = SIGMA**2 / (1 - 0.25 / (4 * SIGMA**2))
    assert ula.var(0).mean().item() == pytest.approx(expected, rel=0.06)
    assert z.var(0).mean().item() == pytest.approx(SIGMA**2, rel=0.06)
    assert z.mean(0).tolist() == pytest.approx([1.0, 1.0], abs=0.03)
    assert 0.3 < acc < 0.95


def test_mala_adapts_its_step_and_is_seeded():
    z0 = torch.zeros(500, 2)
    a, acc = mala(z0, _target, 200, 5.0, generator=torch.Generator().manual_seed(3))
    b, _ = mala(z0, _target, 200, 5.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert acc == pytest.approx(0.574, abs=0.1)  # from a step of 5 that would reject all


def test_mala_rejects_proposals_where_the_density_is_not_finite():
    def half_plane(z: torch.Tensor) -> torch.Tensor:  # NaN left of z_0 = 0
        return torch.where(z[:, 0] > 0, gaussian_log_prob(z), torch.full_like(z[:, 0], math.nan))

    z, _ = mala(
        torch.ones(300, 2), half_plane, 100, 0.8, generator=torch.Generator().manual_seed(0)
    )
    assert torch.isfinite(z).all() and (z[:, 0] > 0).all()


def _prior(kind: str, stages: int = 2):
    cfg = tiny_config(f"prior.kind={kind}", f"prior.stages={stages}", "model.ratio_hidden=32")
    cfg.model.nz = 2
    return PRIORS[kind].from_config(cfg)


@pytest.mark.parametrize("kind", ["nce", "adaptive", "tre"])
def test_refit_recovers_a_known_log_ratio(kind):
    # q = N(m, I) against N(0, I): log q/N = m.z - |m|^2 / 2 exactly. After the refit the
    # prior's log-ratio (sum of its ratios) matches it where q has its mass.
    m = torch.tensor([1.5, -1.0])
    z_q = torch.randn(6000, 2, generator=torch.Generator().manual_seed(0)) + m
    prior = _prior(kind)
    settings = Refit(steps=1500, batch=500, lr=3e-3, chain_steps=200, noise=4000, seed=0)
    losses = prior.refit(z_q, settings)
    assert len(losses) == len(prior.ratios)
    z = torch.randn(2000, 2, generator=torch.Generator().manual_seed(9)) + m
    with torch.no_grad():
        learned = prior.log_prob(z) - gaussian_log_prob(z)
    true = z @ m - m.pow(2).sum() / 2
    assert (learned - true).abs().median().item() < 0.2
    assert prior.ratios_in_prior == len(prior.ratios)
    assert not any(p.requires_grad for p in prior.parameters())


def test_chain_noise_of_zero_steps_is_the_gaussian_so_every_stage_learns_the_whole_ratio():
    # refit.sampler=chain with 0 steps: each stage's noise is its N(0, I) start, so each
    # of the K ratios learns log q/N = m.z - |m|^2 / 2 on its own and the prior's log-ratio is
    # K times it (with MALA noise the later stages would learn about 0 instead).
    m = torch.tensor([1.0, -0.5])
    z_q = torch.randn(6000, 2, generator=torch.Generator().manual_seed(0)) + m
    prior = _prior("adaptive", stages=2)
    settings = Refit(
        steps=1500, batch=500, lr=3e-3, chain_steps=0, noise=4000, sampler="chain", seed=0
    )
    prior.refit(z_q, settings)
    z = torch.randn(2000, 2, generator=torch.Generator().manual_seed(9)) + m / 2
    with torch.no_grad():
        learned = prior.log_prob(z) - gaussian_log_prob(z)
    true = z @ m - m.pow(2).sum() / 2
    assert (learned - 2 * true).abs().median().item() < 0.25


def test_chain_noise_fits_the_prior_for_its_short_chain():
    # q = N(m, I). A short chain on the exact q (50 steps of 0.2 from N(0, I): Langevin time
    # 50 * 0.2^2 = 2) gets a fraction 1 - exp(-2 / 2) = 0.632 of the way to m; so does the
    # MALA-noise refit, whose product is q itself. With the chain's own output as each stage's
    # noise (refit.sampler=chain), the stages correct the chain: its samples reach q.
    m = torch.tensor([1.0, -1.0])
    z_q = torch.randn(6000, 2, generator=torch.Generator().manual_seed(0)) + m
    reached = {}
    for sampler in ["mala", "chain"]:
        prior = _prior("adaptive", stages=4)
        chain = {"chain_steps": 50, "step_size": 0.2} if sampler == "chain" else {}
        settings = Refit(
            steps=2000, batch=500, lr=3e-3, chain_steps=100, noise=2000, sampler=sampler, seed=0
        )
        settings = dataclasses.replace(settings, **chain)
        prior.refit(z_q, settings)
        g = torch.Generator().manual_seed(5)
        z0 = torch.randn(4000, 2, generator=g)
        z = prior.sample(z0, 50, 0.2, lambda _, g=g: torch.randn(4000, 2, generator=g))
        reached[sampler] = (z.mean(0) @ m / m.pow(2).sum()).item()  # fraction of the way to m
    assert reached["mala"] == pytest.approx(1 - math.exp(-1), abs=0.05)
    assert reached["chain"] == pytest.approx(1.0, abs=0.05)


def test_refit_is_seeded():
    z_q = torch.randn(1000, 2) + 1
    settings = Refit(steps=50, batch=100, chain_steps=20, noise=500, seed=4)
    a, b = _prior("adaptive"), _prior("adaptive")
    a.refit(z_q, settings)
    b.refit(z_q, settings)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_refit_split_by_stage_gives_every_adaptive_stage_the_whole_budget(monkeypatch):
    # refit.split=stage: each of the K stages gets refit.steps updates; total (the
    # default) splits them evenly. Stage k's updates and streams do not depend on the other
    # stages', so "stage" with N equals "total" with K * N, bit for bit.
    z_q = torch.randn(1000, 2) + 1
    counts: list[int] = []
    fit = PRIORS["adaptive"]._fit

    def counting(self, ratios, loss, settings, *args):
        counts.append(settings.steps)
        return fit(self, ratios, loss, settings, *args)

    monkeypatch.setattr(PRIORS["adaptive"], "_fit", counting)
    settings = Refit(steps=10, batch=100, chain_steps=5, noise=300, seed=1)
    by_stage, in_all = _prior("adaptive", stages=3), _prior("adaptive", stages=3)
    by_stage.refit(z_q, dataclasses.replace(settings, per_stage=True))
    assert counts == [10, 10, 10]
    in_all.refit(z_q, dataclasses.replace(settings, steps=30))
    assert counts[3:] == [10, 10, 10]
    for pa, pb in zip(by_stage.parameters(), in_all.parameters(), strict=True):
        assert torch.equal(pa, pb)
    counts.clear()
    _prior("adaptive", stages=3).refit(z_q, dataclasses.replace(settings, steps=31))
    assert counts == [10, 10, 11]
    cfg = tiny_config("refit.split=stage")
    assert refit_module.refit_settings(cfg).per_stage
    assert not refit_module.refit_settings(tiny_config()).per_stage
    with pytest.raises(LatentEBMError, match=r"refit\.split"):
        validate(tiny_config("refit.split=each"))


def test_gaussian_prior_has_nothing_to_refit(digits, monkeypatch):
    cfg = tiny_config("prior.kind=gaussian", "refit.steps=10")

    def fail(*args, **kwargs):
        raise AssertionError("no posterior samples are drawn for a prior without a refit")

    monkeypatch.setattr(refit_module, "aggregate_posterior", fail)
    assert refit_module.refit_prior(build_model(cfg, digits.shape), digits, cfg) == []


def test_aggregate_posterior_cycles_the_images_in_a_seeded_order(digits):
    cfg = tiny_config()
    model = build_model(cfg, digits.shape).eval()
    images = digits.train_x[:30]
    a = refit_module.aggregate_posterior(model, images, 70, 3, 0.1, seed=2, batch_size=25)
    b = refit_module.aggregate_posterior(model, images, 70, 3, 0.1, seed=2, batch_size=25)
    assert a.shape == (70, cfg.model.nz) and torch.equal(a, b)
    # With no chain steps the samples are the seeded N(0, I) starts: the order does not matter.
    c = refit_module.aggregate_posterior(model, images, 70, 0, 0.1, seed=2, batch_size=25)
    first = torch.randn(25, cfg.model.nz, generator=rng.generator_for(2, rng.REFIT, 0, 0))
    assert torch.equal(c[:25], first)


REFIT = ["refit.steps=40", "refit.batch=50", "refit.samples=200",
         "refit.chain_steps=10", "refit.noise=300"]  # fmt: skip


def test_training_ends_with_the_refit_and_a_resume_repeats_it(tmp_path, digits, monkeypatch):
    cfg = tiny_config(*REFIT)
    full = train(cfg, tmp_path / "full", progress=False, data=digits)
    state = checkpoint_state(tmp_path / "full")
    assert len(state["refit"]) == cfg.prior.stages

    # A crash inside the refit: the checkpoint of the last iteration stays, without a refit.
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(sys.modules["latent_ebm.train"], "refit_prior", crash)
        with pytest.raises(KeyboardInterrupt):
            train(cfg, tmp_path / "crash", progress=False, data=digits)
    assert checkpoint_state(tmp_path / "crash")["refit"] is None
    resumed = train(None, tmp_path / "crash", resume=True, progress=False, data=digits)
    assert_same_state(checkpoint_state(tmp_path / "crash"), state)
    for pa, pb in zip(full.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(pa, pb)
    # The refit changed the prior: its ratios differ from a run without one.
    plain = train(tiny_config("refit.steps=0"), tmp_path / "plain", progress=False, data=digits)
    assert checkpoint_state(tmp_path / "plain")["refit"] is None
    assert not torch.equal(full.prior.ratios[0].net[0].weight, plain.prior.ratios[0].net[0].weight)
    # ... and nothing else: the generator is the same.
    for pa, pb in zip(full.generator.parameters(), plain.generator.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_mala_sampling_of_a_trained_prior(tmp_path, digits):
    model = train(tiny_config("prior.kind=nce"), tmp_path / "r", progress=False, data=digits)
    a = sample_latents(model, 30, method="mala", steps=20, seed=1)
    b = sample_latents(model, 30, method="mala", steps=20, seed=1)
    assert a.shape == (30, 4) and torch.equal(a, b)
    g = train(tiny_config("prior.kind=gaussian"), tmp_path / "g", progress=False, data=digits)
    exact = sample_latents(g, 30, method="mala", steps=20, seed=1)
    assert torch.equal(exact, sample_latents(g, 30, method="langevin", steps=20, seed=1))


def test_reproduce_finishes_a_refit_that_was_interrupted(tmp_path, monkeypatch):
    from latent_ebm.experiments import experiment_runs
    from latent_ebm.experiments import reproduction as rep

    run = experiment_runs("stages", "digits", "tiny", overrides=REFIT)[1]  # nce
    run_dir = tmp_path / run.name

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(sys.modules["latent_ebm.train"], "refit_prior", crash)
        with pytest.raises(KeyboardInterrupt):
            train(run.cfg, run_dir, progress=False)
    lines: list[str] = []
    state = rep._train(run, run_dir, "nce", False, lines.append)
    assert lines == ["nce: resuming at iteration 16 of 16 ..."]
    assert len(state["refit"]) == 1
    lines.clear()
    rep._train(run, run_dir, "nce", False, lines.append)
    assert lines == ["nce: trained earlier (16 iterations), not retrained"]


def test_a_run_saved_before_the_refit_existed_keeps_meaning_no_refit(tmp_path):
    from latent_ebm.config import load_config, save_config

    cfg = tiny_config()
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml").refit.steps == 20
    old = yaml.safe_load((tmp_path / "config.yaml").read_text())
    del old["refit"]  # written before the refit existed: neither refit.* nor prior.refit_*
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert load_config(tmp_path / "config.yaml").refit.steps == 0
    assert tiny_config("refit.steps=4000").refit.steps == 4000
    from latent_ebm.config import Config

    assert Config().refit.steps == 0  # new configs: the paper recipe, no refit
