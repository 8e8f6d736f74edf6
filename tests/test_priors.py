"""The multi-stage prior: Eq. 5, frozen stages, gradient flow, memory bank and snapshot."""

import torch

from latent_ebm import rng
from latent_ebm.memory import MemoryBank
from latent_ebm.model import build_model
from latent_ebm.priors import AdaptivePrior, GaussianPrior, build_prior, stage_of
from tests.conftest import tiny_config


def _streams(iteration=0, batch=8):
    return rng.Streams(0, iteration, batch, slice(None), torch.device("cpu"))


def test_log_prob_is_sum_of_frozen_ratios_minus_half_norm():
    prior = AdaptivePrior(nz=3, stages=3, hidden=8)
    bank = MemoryBank(10, 3, seed=0)
    z = torch.randn(7, 3)
    assert torch.allclose(prior.log_prob(z), -0.5 * z.pow(2).sum(-1))  # stage 0: N(0, I)
    prior.set_stage(2, bank)
    with torch.no_grad():
        expected = prior.ratios[0](z) + prior.ratios[1](z) - 0.5 * z.pow(2).sum(-1)
        assert torch.allclose(prior.log_prob(z), expected)
    prior.set_stage(3, bank)
    with torch.no_grad():
        expected = expected + prior.ratios[2](z)
        assert torch.allclose(prior.log_prob(z), expected)


def test_frozen_ratios_receive_no_gradient_and_current_one_does():
    prior = AdaptivePrior(nz=3, stages=3, hidden=8)
    bank = MemoryBank(20, 3, seed=0)
    prior.set_stage(1, bank)
    before = [p.clone() for p in prior.ratios[0].parameters()]
    logs = prior.train_step(torch.randn(8, 3), _streams(), bank)
    assert set(logs) == {"nce"}
    assert all(p.grad is None for p in prior.ratios[0].parameters())
    assert all(p.grad is None for p in prior.ratios[2].parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in prior.ratios[1].parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, prior.ratios[0].parameters(), strict=True))
    assert not any(p.requires_grad for p in prior.ratios[0].parameters())


def test_posterior_chain_leaves_no_gradient_on_any_weight():
    model = build_model(tiny_config("prior.stages=2"), (1, 8, 8))
    model.prior.set_stage(1, MemoryBank(10, 4, seed=0))
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    z = model.infer(x, torch.randn(5, 4), steps=3, step_size=0.1, training=True)
    assert not z.requires_grad
    assert all(p.grad is None for p in model.parameters())


def test_one_iteration_reaches_every_trainable_parameter():
    """Generator loss and NCE loss together give a gradient to every trainable parameter."""
    cfg = tiny_config("prior.stages=2")
    model = build_model(cfg, (1, 8, 8))
    bank = MemoryBank(50, 4, seed=0)
    model.prior.set_stage(1, bank)
    x = torch.rand(8, 1, 8, 8) * 2 - 1
    z = model.infer(x, torch.randn(8, 4), steps=3, step_size=0.1, training=True)
    model.prior.train_step(z, _streams(), bank)
    model.generator_loss(x, z).backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.generator.named_parameters(prefix="generator")} | {
        n for n, _ in model.prior.ratios[1].named_parameters(prefix="prior.ratios.1")
    }
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_memory_bank_snapshot_across_stage_transition():
    prior = AdaptivePrior(nz=2, stages=2, hidden=8)
    bank = MemoryBank(6, 2, seed=0)
    initial = bank.bank.clone()
    assert torch.equal(bank.snapshot, initial)
    # Stage 0: writes change the bank, not the snapshot; NCE noise is exact N(0, I) draws.
    bank.write(torch.tensor([1, 4]), torch.full((2, 2), 7.0))
    assert torch.equal(bank.bank[[1, 4]], torch.full((2, 2), 7.0))
    assert torch.equal(bank.snapshot, initial)
    s = _streams(iteration=3, batch=5)
    assert torch.equal(prior._noise_samples(s, bank), s.normal(rng.PRIOR_DRAW, 2))
    # Transition: the snapshot freezes the bank as it is now.
    prior.set_stage(1, bank)
    frozen = bank.bank.clone()
    assert torch.equal(bank.snapshot, frozen)
    bank.write(torch.tensor([1]), torch.full((1, 2), -3.0))
    assert torch.equal(bank.snapshot, frozen)
    # Persistent noise samples are snapshot rows, chosen by the iteration's stream.
    rows = s.randint(rng.PRIOR_DRAW, 6)
    assert torch.equal(prior._noise_samples(s, bank), frozen[rows])
    # Staying in a stage does not take a new snapshot.
    prior.set_stage(1, bank)
    assert torch.equal(bank.snapshot, frozen)


def test_langevin_prior_samples_follow_the_prior_chain():
    prior = AdaptivePrior(nz=2, stages=2, hidden=8, prior_samples="langevin", prior_steps=3)
    bank = MemoryBank(6, 2, seed=0)
    prior.set_stage(1, bank)
    s = _streams(batch=4)
    z = prior._noise_samples(s, bank)
    assert z.shape == (4, 2)
    assert not any(torch.equal(z[i], r) for i in range(4) for r in bank.snapshot)


def test_stage_schedule():
    assert [stage_of(t, 8, 4) for t in range(9)] == [0, 0, 1, 1, 2, 2, 3, 3, 4]
    lengths = [sum(stage_of(t, 10, 4) == k for t in range(10)) for k in range(4)]
    assert sum(lengths) == 10 and max(lengths) - min(lengths) <= 1
    assert [stage_of(t, 5, 0) for t in range(6)] == [0] * 6


def test_gaussian_prior_and_k0():
    assert isinstance(build_prior(tiny_config("prior.kind=gaussian")), GaussianPrior)
    p = build_prior(tiny_config("prior.stages=0"))
    z = torch.randn(5, 4)
    assert torch.allclose(p.log_prob(z), -0.5 * z.pow(2).sum(-1))
    assert p.train_step(z, _streams(batch=5), MemoryBank(5, 4, 0)) == {}
    assert list(p.parameters()) == []
