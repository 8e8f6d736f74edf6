"""Operation counts and the cost estimate: hand-computed counts and a real iteration's count."""

import pytest
import torch

from latent_ebm import rng
from latent_ebm.config import validate
from latent_ebm.experiments import (
    count_flops,
    describe,
    estimate,
    format_count,
    iteration_flops,
    parse_rate,
)
from latent_ebm.memory import MemoryBank
from latent_ebm.model import build_model
from latent_ebm.nets import Generator
from latent_ebm.train import train_iteration
from tests.conftest import tiny_config

SHAPE = (1, 8, 8)


def test_generator_forward_count_by_hand():
    # 8x8 family at nz 3, ngf 2, one channel: a transposed convolution costs
    # 2 * C_in * C_out * k^2 per input pixel (each input pixel scatters a k x k x C_out patch).
    g = Generator(nz=3, ngf=2, channels=1, size=8)
    layers = [  # (C_in, C_out, k, input side)
        (3, 8, 2, 1),  # 1x1 -> 2x2
        (8, 4, 4, 2),  # 2x2 -> 4x4
        (4, 1, 4, 4),  # 4x4 -> 8x8
    ]
    per_image = sum(2 * ci * co * k * k * side * side for ci, co, k, side in layers)
    assert per_image == 6336
    with torch.no_grad():
        assert count_flops(lambda: g(torch.randn(5, 3))) == 5 * per_image


def test_gaussian_iteration_is_chain_steps_plus_update():
    # With the Gaussian prior an iteration is L chain steps (a forward and the gradient with
    # respect to z) and one generator update (a forward and the full backward).
    cfg = validate(tiny_config("prior.kind=gaussian", "train.post_steps=7", "train.batch_size=3"))
    g = build_model(cfg, SHAPE).generator
    z = torch.randn(3, cfg.model.nz, requires_grad=True)
    step = count_flops(lambda: torch.autograd.grad(g(z).sum(), z))
    update = count_flops(lambda: g(z.detach()).sum().backward())  # z is data in the update
    forward = count_flops(lambda: g(z.detach()))
    assert step == 2 * forward  # the chain asks for no weight gradient, only for z's
    # No gradient for z into layer 1 (B 3, 2 C_in C_out k^2 = 2 * 4 * 16 * 2 * 2 a row).
    assert update == 3 * forward - 3 * 2 * 4 * 16 * 2 * 2
    assert iteration_flops(cfg, SHAPE) == 7 * step + update


@pytest.mark.parametrize(
    ("kind", "stage", "extra"),
    [
        ("gaussian", 0, ()),
        ("adaptive", 0, ()),
        ("adaptive", 2, ()),
        ("adaptive", 1, ("prior.prior_samples=langevin",)),
        ("tre", 0, ()),
        ("lebm", 0, ()),
    ],
)
def test_iteration_count_equals_a_real_iteration(kind, stage, extra):
    # One row's count times the batch equals the count of a real iteration at that batch.
    cfg = validate(
        tiny_config(f"prior.kind={kind}", "prior.stages=3", "train.batch_size=6", *extra)
    )
    model = build_model(cfg, SHAPE).train()
    bank = MemoryBank(10, cfg.model.nz, 0, torch.device("cpu"))
    model.prior.set_stage(stage, bank)
    opt_g = torch.optim.Adam(model.generator.parameters())
    x, idx = torch.rand(6, *SHAPE) * 2 - 1, torch.arange(6)
    streams = rng.Streams(0, 5, 6, slice(0, 6), torch.device("cpu"))
    real = count_flops(lambda: train_iteration(model, opt_g, bank, x, idx, streams, cfg))
    assert real > 0
    assert iteration_flops(cfg, SHAPE, stage) == real


def test_estimate_sums_the_stages():
    cfg = validate(tiny_config("prior.stages=3", "train.iters=10"))
    est = estimate(cfg, SHAPE)
    assert est.stage_iters == {0: 4, 1: 3, 2: 3}  # stage_of: floor(3 t / 10)
    assert est.iters == 10
    assert list(est.stage_flops) == list(est.stage_iters)
    # Each later stage evaluates one more frozen ratio in every posterior-chain step.
    f = list(est.stage_flops.values())
    assert f[0] < f[1] < f[2] and f[2] - f[1] == f[1] - f[0]
    assert est.total_flops == sum(est.stage_iters[s] * f[s] for s in range(3))
    assert est.seconds(est.total_flops / 4) == pytest.approx(4.0)
    n_ratio = 4 * 16 + 16 + 16 * 16 + 16 + 16 + 1  # nz 4, hidden 16 (paper Table 4)
    assert est.prior_params == 3 * n_ratio


def test_describe_reports_parameters_operations_and_time():
    cfg = validate(tiny_config("prior.stages=2", "train.iters=20"))
    est = estimate(cfg, SHAPE)
    text = describe(cfg, SHAPE, num_train=1437, flops_per_s=est.total_flops / 300.0)
    assert "1,437 for training (28 iterations of 50)" in text
    assert "20 iterations = 0.7 epochs, 2 stage(s) of 10 iterations" in text
    assert f"generator {est.generator_params:,}, prior {est.prior_params:,}" in text
    assert "time: 5.0 min at" in text and "(15.0 s an iteration)" in text
    assert "pass --throughput" in describe(cfg, SHAPE)


@pytest.mark.parametrize(
    ("text", "value"),
    [("20T", 20e12), ("1.5e12", 1.5e12), ("300 GFLOP/s", 300e9), ("7", 7.0), ("2.5k", 2500.0)],
)
def test_parse_rate(text, value):
    assert parse_rate(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "fast", "-3T", "0", "5X", "1e"])
def test_parse_rate_rejects(text):
    with pytest.raises(ValueError, match="positive rate"):
        parse_rate(text)


def test_format_count():
    assert format_count(1.234e12, "FLOP") == "1.23 TFLOP"
    assert format_count(999, "B") == "999 B"
    assert format_count(0.5) == "0.5 "
