"""Every prior variant behind one interface (ARCHITECTURE §4): shapes, gradients, save/load, a short
training run; exact properties of the TRE waymarks and of the LEBM prior chain and learning."""

import io
import math

import pytest
import torch

from latent_ebm import rng
from latent_ebm.config import num_stages, validate
from latent_ebm.errors import LatentEBMError
from latent_ebm.memory import MemoryBank
from latent_ebm.model import build_model
from latent_ebm.priors import PRIORS, LEBMPrior, TREPrior, build_prior, tre_waymarks
from latent_ebm.rundir import read_metrics
from latent_ebm.train import train
from tests.conftest import (
    assert_resume_matches,
    assert_same_state,
    checkpoint_state,
    tiny_config,
)

KINDS = list(PRIORS)
SHAPE = (1, 8, 8)

# Trainable prior parameters (name prefixes) in the last stage of the schedule of
# ``tiny_config`` (K = 2 for adaptive and tre). LEBM's output bias is a constant in log p that
# maximum likelihood cannot determine: it is frozen.
TRAINABLE = {
    "gaussian": (),
    "nce": ("prior.ratios.0.",),
    "adaptive": ("prior.ratios.1.",),  # ratio 0 is frozen into the prior
    "tre": ("prior.ratios.0.", "prior.ratios.1."),
    "lebm": ("prior.energy.net.0.", "prior.energy.net.2.", "prior.energy.net.4.weight"),
}


def _streams(iteration=0, batch=8):
    return rng.Streams(0, iteration, batch, slice(None), torch.device("cpu"))


def _iteration(model, bank, x, iteration):
    """One training iteration as train.py runs it; returns the prior's logs."""
    z0 = _streams(iteration).normal(rng.POSTERIOR_INIT, model.nz)
    z = model.infer(x, z0, steps=3, step_size=0.1, training=True)
    assert all(p.grad is None for p in model.parameters())  # chains leave no gradient
    logs = model.prior.train_step(z, _streams(iteration), bank)
    model.generator_loss(x, z).backward()
    return logs


def _roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


@pytest.mark.parametrize("kind", KINDS)
def test_prior_interface(kind):
    cfg = tiny_config(f"prior.kind={kind}")
    model = build_model(cfg, SHAPE)
    assert type(model.prior) is PRIORS[kind]
    bank = MemoryBank(50, 4, seed=0)
    model.prior.set_stage(max(num_stages(cfg) - 1, 0), bank)
    z = torch.randn(8, 4)
    assert model.prior.log_prob(z).shape == (8,)
    assert torch.isfinite(model.prior.log_prob(z)).all()
    assert model.prior.inference_log_prob(z).shape == (8,)
    assert torch.isfinite(model.prior.inference_log_prob(z)).all()
    assert model.prior.sample(z, 3, 0.1).shape == (8, 4)

    # One iteration: a gradient reaches every trainable parameter and no other.
    x = torch.rand(8, *SHAPE) * 2 - 1
    logs = _iteration(model, bank, x, iteration=0)
    assert all(isinstance(v, float) and math.isfinite(v) for v in logs.values())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    prefixes = ("generator.", *TRAINABLE[kind])
    expected = {n for n, _ in model.named_parameters() if n.startswith(prefixes)}
    assert trainable == expected
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name

    # Save/load round trip into a differently initialised model.
    state = _roundtrip({"model": model.state_dict(), "opt": model.prior.optimizer_state()})
    torch.manual_seed(1)
    other = build_model(cfg, SHAPE)
    other.load_state_dict(state["model"])
    other.prior.load_optimizer_state(state["opt"])
    assert torch.equal(other.prior.log_prob(z), model.prior.log_prob(z))
    z_post = torch.randn(8, 4)
    model.prior.train_step(z_post, _streams(1), bank)
    other.prior.train_step(z_post, _streams(1), bank)
    for (name, a), b in zip(model.named_parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(other.prior.log_prob(z), model.prior.log_prob(z))


@pytest.mark.filterwarnings("ignore:each stage lasts")  # 4-iteration stages are fine here
@pytest.mark.parametrize("kind", KINDS)
def test_short_training_run(tmp_path, digits, kind):
    cfg = tiny_config(f"prior.kind={kind}", "train.iters=8", "prior.prior_steps=5")
    model = train(cfg, tmp_path / "run", progress=False, data=digits)
    lines = read_metrics(tmp_path / "run")
    assert [m["iteration"] for m in lines] == [2, 4, 6, 8]
    logged = {
        "gaussian": set(),
        "nce": {"nce"},
        "adaptive": {"nce"},
        "tre": {"nce", "nce_0", "nce_1"},
        "lebm": {"loss_ebm"},
    }[kind]
    assert set(lines[-1]) == {"iteration", "stage", "time", "loss_g"} | logged
    assert {m["stage"] for m in lines} == ({0, 1} if kind == "adaptive" else {0})
    if kind in ("nce", "adaptive"):  # the run ends with every ratio frozen into the prior
        assert len(model.prior.ratios) == num_stages(cfg) == int(model.prior.stage)
        assert not any(p.requires_grad for p in model.prior.parameters())
    assert torch.isfinite(model.prior.log_prob(torch.randn(5, 4))).all()


@pytest.mark.parametrize("kind", ["tre", "lebm"])
def test_resume_equals_uninterrupted(tmp_path, digits, kind):
    cfg = tiny_config(f"prior.kind={kind}", "train.iters=8", "prior.prior_steps=5")
    assert_resume_matches(cfg, tmp_path, 4, digits)


def test_nce_is_adaptive_with_one_stage(tmp_path, digits):
    for stages in (0, 1, 4):
        cfg = tiny_config("prior.kind=nce", f"prior.stages={stages}")
        assert num_stages(cfg) == 1
        assert len(build_prior(cfg).ratios) == 1
    # A whole nce run is bitwise the adaptive run with K = 1.
    train(tiny_config("prior.kind=nce"), tmp_path / "nce", progress=False, data=digits)
    one = tiny_config("prior.kind=adaptive", "prior.stages=1")
    train(one, tmp_path / "adaptive", progress=False, data=digits)
    assert_same_state(checkpoint_state(tmp_path / "nce"), checkpoint_state(tmp_path / "adaptive"))


def test_adaptive_inference_under_the_gaussian_trains_the_gaussian_generator(tmp_path, digits):
    # prior.inference=gaussian: the posterior chains of training never see the ratios, so an
    # adaptive run's generator (and memory bank) is bit for bit the gaussian prior's; with the
    # paper's inference under p_k (stage 1 onwards) it is not.
    def generator(kind: str, *extra: str) -> dict:
        out = tmp_path / f"{kind}{len(extra)}"
        train(tiny_config(f"prior.kind={kind}", *extra), out, progress=False, data=digits)
        state = checkpoint_state(out)
        gen = {k: v for k, v in state["model"].items() if k.startswith("generator.")}
        return {**gen, "bank": state["bank"]["bank"]}

    base = generator("gaussian")
    under_gaussian = generator("adaptive", "prior.inference=gaussian")
    paper = generator("adaptive")
    assert all(torch.equal(base[k], under_gaussian[k]) for k in base)
    assert not all(torch.equal(base[k], paper[k]) for k in base)
    with pytest.raises(LatentEBMError, match=r"'prior.inference' must be 'current' for .*lebm"):
        validate(tiny_config("prior.kind=lebm", "prior.inference=gaussian"))
    with pytest.raises(LatentEBMError, match=r"refit\.sampler"):
        validate(tiny_config("refit.sampler=exact"))


def test_stage_counts_and_validation():
    assert num_stages(tiny_config("prior.kind=gaussian", "prior.stages=3")) == 0
    assert num_stages(tiny_config("prior.kind=adaptive", "prior.stages=3")) == 3
    assert num_stages(tiny_config("prior.kind=tre", "prior.stages=3")) == 0
    assert num_stages(tiny_config("prior.kind=lebm", "prior.stages=3")) == 0
    assert len(build_prior(tiny_config("prior.kind=tre", "prior.stages=3")).ratios) == 3
    with pytest.raises(LatentEBMError, match=r"'prior.stages' must be >= 1 for prior.kind=tre"):
        validate(tiny_config("prior.kind=tre", "prior.stages=0"))


def test_tre_waymarks_interpolate_from_prior_to_posterior():
    z_p, z_q, k = torch.randn(6, 3), torch.randn(6, 3) + 2, 4
    w = tre_waymarks(z_p, z_q, k)
    assert w.shape == (k + 1, 6, 3)
    assert torch.equal(w[0], z_p) and torch.equal(w[k], z_q)
    for j in range(1, k):
        a = j / k
        assert torch.allclose(w[j], math.sqrt(1 - a * a) * z_p + a * z_q, atol=1e-6)


def test_tre_prior_composes_its_ratios_and_infers_under_the_gaussian():
    prior = TREPrior(nz=3, stages=3, hidden=8)
    z = torch.randn(7, 3)
    with torch.no_grad():
        total = sum(f(z) for f in prior.ratios)
        assert torch.allclose(prior.log_prob(z) + 0.5 * z.pow(2).sum(-1), total, atol=1e-6)
        assert torch.equal(prior.inference_log_prob(z), -0.5 * z.pow(2).sum(-1))


def test_tre_ratio_j_separates_waymark_j_plus_1_from_j():
    """Each ratio's logged loss is the NCE loss on its own pair of waymarks."""
    prior = TREPrior(nz=2, stages=2, hidden=8, lr=0.0)
    z_post, s = torch.randn(8, 2) + 3, _streams(batch=8)
    w = tre_waymarks(s.normal(rng.PRIOR_DRAW, 2), z_post, 2)
    with torch.no_grad():
        expected = [
            torch.nn.functional.softplus(-f(w[j + 1])).mean()
            + torch.nn.functional.softplus(f(w[j])).mean()
            for j, f in enumerate(prior.ratios)
        ]
    logs = prior.train_step(z_post, s, MemoryBank(1, 2, 0))
    for j in range(2):
        assert logs[f"nce_{j}"] == pytest.approx(expected[j].item(), rel=1e-6)
    assert logs["nce"] == pytest.approx((logs["nce_0"] + logs["nce_1"]) / 2)


def _linear_energy(a: torch.Tensor) -> LEBMPrior:
    """An LEBM whose ``f(z) = a . z`` exactly, so its prior is ``N(a, I)``.

    With two hidden units, ``h - h' = 1.1 u`` for ``h = LeakyReLU(u)``, ``h' = LeakyReLU(-u)``
    (slope 0.1): two such layers and a last layer of ``(1, -1) / 1.21`` give ``u = a . z``.
    """
    prior = LEBMPrior(nz=len(a), hidden=2)
    lin1, lin2, lin3 = (m for m in prior.energy.modules() if isinstance(m, torch.nn.Linear))
    with torch.no_grad():
        lin1.weight.copy_(torch.stack([a, -a]))
        lin2.weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
        lin3.weight.copy_(torch.tensor([[1.0, -1.0]]) / 1.21)
        for lin in (lin1, lin2, lin3):
            lin.bias.zero_()
    return prior


def test_lebm_prior_chain_on_a_known_energy():
    """The training prior chain (60 steps of 0.4, LEBM's) on ``exp(a . z) N(0, I) = N(a, I)``."""
    a = torch.tensor([1.5, -1.0])
    prior = _linear_energy(a)
    z = torch.randn(5, 2)
    with torch.no_grad():
        assert torch.allclose(prior.energy(z), z @ a, atol=1e-5)
    samples = prior.prior_samples(_streams(batch=4000))
    mean, var = samples.mean(0), samples.var(0)
    print(f"LEBM prior chain on N(a, I): mean {mean.tolist()}, var {var.tolist()}")
    assert torch.allclose(mean, a, atol=0.06)
    assert torch.allclose(var, torch.ones(2), atol=0.12)
    assert all(p.grad is None for p in prior.parameters())  # the chain leaves no gradient


def test_lebm_maximum_likelihood_learns_a_gaussian_target():
    """A few hundred ML updates on fresh draws of N(mu, diag(sd^2)) as the posterior samples:
    the learned ``log_prob`` correlates with the true log-density on held-out draws."""
    mu, sd = torch.tensor([1.0, -0.5]), torch.tensor([0.5, 1.0])
    prior = LEBMPrior(nz=2, hidden=32, lr=1e-3)  # LEBM chain: 60 steps of 0.4
    g = torch.Generator().manual_seed(0)
    bank = MemoryBank(1, 2, seed=0)
    for it in range(300):
        z_post = mu + sd * torch.randn(100, 2, generator=g)
        prior.train_step(z_post, _streams(it, batch=100), bank)
    held_out = mu + sd * torch.randn(2000, 2, generator=g)
    with torch.no_grad():
        learned = prior.log_prob(held_out)
    true = (-0.5 * ((held_out - mu) / sd) ** 2).sum(-1)
    r = torch.corrcoef(torch.stack([learned, true]))[0, 1].item()
    print(f"LEBM learned vs true log-density on held-out target draws: Pearson r = {r:.4f}")
    assert r > 0.9
