"""Warm-started posterior chains (``train.post_init=bank``): where a chain starts, how many
steps it runs, exact resume, and the paper's noise start left unchanged."""

import re

import pytest
import torch

from latent_ebm import rng
from latent_ebm.config import validate
from latent_ebm.errors import LatentEBMError
from latent_ebm.experiments import iteration_flops
from latent_ebm.memory import MemoryBank
from latent_ebm.model import build_model
from latent_ebm.train import train_iteration
from tests.conftest import assert_iteration_writes_rows, assert_resume_matches, tiny_config

SHAPE = (1, 8, 8)


def _setup(*overrides):
    """A tiny model at stage 1, a bank of 30 rows, a batch of 6 of them and its streams."""
    cfg = validate(tiny_config("train.batch_size=6", *overrides))
    model = build_model(cfg, SHAPE).train()
    bank = MemoryBank(30, cfg.model.nz, 0)
    model.prior.set_stage(1, bank)
    opt_g = torch.optim.Adam(model.generator.parameters())
    x, idx = torch.rand(6, *SHAPE) * 2 - 1, torch.tensor([3, 29, 0, 11, 7, 20])
    streams = rng.Streams(0, 4, 6, slice(0, 6), torch.device("cpu"))
    return cfg, model, bank, opt_g, x, idx, streams


def test_zero_steps_keep_the_start():
    # With no chain step the posterior sample is the chain's start: the example's bank row
    # with post_init=bank, the iteration's N(0, I) draw with the paper's noise start.
    cfg, model, bank, opt_g, x, idx, streams = _setup("train.post_init=bank", "train.post_steps=0")
    before = bank.bank.clone()
    train_iteration(model, opt_g, bank, x, idx, streams, cfg)
    assert torch.equal(bank.bank, before)
    cfg, model, bank, opt_g, x, idx, streams = _setup("train.post_steps=0")
    train_iteration(model, opt_g, bank, x, idx, streams, cfg)
    assert torch.equal(bank.bank[idx], streams.normal(rng.POSTERIOR_INIT, cfg.model.nz))


@pytest.mark.parametrize(("warm_steps", "steps"), [("null", 4), (2, 2)])
def test_warm_chain_runs_from_the_bank_row(warm_steps, steps):
    # The bank rows written are the chain of `steps` steps started at the rows read
    # (train.warm_steps, null meaning train.post_steps = 4), with the iteration's noise.
    cfg, model, bank, opt_g, x, idx, streams = _setup(
        "train.post_init=bank", f"train.warm_steps={warm_steps}"
    )
    noise = streams.chain_noise(rng.POSTERIOR_NOISE, cfg.model.nz)
    expected = model.infer(x, bank.bank[idx], steps, cfg.train.post_step_size, noise, True)
    assert_iteration_writes_rows(model, opt_g, bank, x, idx, streams, cfg, expected)


def test_warm_steps_set_the_chain_length_in_the_operation_count():
    warm = validate(tiny_config("train.post_init=bank", "train.warm_steps=2"))
    cold = validate(tiny_config("train.post_steps=2"))
    assert iteration_flops(warm, SHAPE, 1) == iteration_flops(cold, SHAPE, 1)


def test_warm_start_resumes_bitwise(tmp_path, digits):
    cfg = tiny_config("train.post_init=bank", "train.warm_steps=2")
    full, _ = assert_resume_matches(cfg, tmp_path, 6, digits)
    assert full["config"]["train"]["post_init"] == "bank"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.post_init=memory", "'train.post_init' must be one of noise, bank, amortised"),
        ("train.warm_steps=-1", "'train.warm_steps' must be >= 0 (or null: train.post_steps)"),
        ("train.warm_steps=3", "'train.warm_steps' (3) applies to train.post_init=bank or amor"),
    ],
)
def test_bad_warm_start_fields(override, message):
    with pytest.raises(LatentEBMError, match=re.escape(message)):
        validate(tiny_config(override))
