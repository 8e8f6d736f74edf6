"""bf16 autocast (``train.precision``): where it applies, how close its chains stay to float32,
and a bf16 training run that resumes bit for bit with float32 state."""

import re

import pytest
import torch

from latent_ebm import rng
from latent_ebm.config import validate
from latent_ebm.errors import LatentEBMError
from latent_ebm.memory import MemoryBank
from latent_ebm.model import build_model
from latent_ebm.precision import autocast
from latent_ebm.rundir import read_metrics
from latent_ebm.train import train
from tests.conftest import assert_resume_matches, tiny_config

U = 2.0**-8  # unit roundoff of bfloat16 (8 significant bits)


def test_autocast_runs_the_generator_in_bf16_and_keeps_z_float32():
    # ConvTranspose2d is on the CPU autocast list of this torch; the log density and the
    # gradient with respect to z come back float32.
    cfg = tiny_config("prior.stages=1")
    model = build_model(cfg, (1, 8, 8))
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    z = torch.randn(5, cfg.model.nz, requires_grad=True)
    for precision, dtype in [("fp32", torch.float32), ("bf16", torch.bfloat16)]:
        with autocast(precision, "cpu"):
            assert model.generator(z).dtype == dtype
            log_p = model.log_joint(x, z, training=True)
            (grad,) = torch.autograd.grad(log_p.sum(), z)
        assert log_p.dtype == grad.dtype == torch.float32
    with pytest.raises(ValueError, match="unknown precision"):
        autocast("fp16", "cpu")


@pytest.mark.parametrize(("shape", "nz", "ngf"), [((1, 8, 8), 16, 16), ((1, 28, 28), 32, 16)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bf16_chain_stays_close_to_fp32(shape, nz, ngf, seed):
    """Ten posterior steps from the same z0 with the same noise, in fp32 and in bf16.

    The noise is shared, so the chains differ only through their gradients. Each bf16
    gradient carries the rounding of a few casts (relative error a few u each, u = 2^-8);
    the chain does not amplify it over ten steps of size 0.1. Bounds: 8u on the drift (the
    part of z_L - z0 the gradients made) and 2u on the whole move z_L - z0; measured with
    torch 2.13 on the CPU: 1.6u to 2.3u and 0.3u to 0.45u.
    """
    cfg = tiny_config(f"model.nz={nz}", f"model.ngf={ngf}", "prior.stages=2")
    torch.manual_seed(seed)
    model = build_model(cfg, shape)
    model.prior.set_stage(1, MemoryBank(20, nz, seed))  # one ratio in the chain's prior
    x = torch.rand(20, *shape) * 2 - 1
    streams = rng.Streams(seed, 0, 20, slice(0, 20), torch.device("cpu"))
    z0 = streams.normal(rng.POSTERIOR_INIT, nz)
    steps, s = 10, 0.1
    z = {}
    for precision in ("fp32", "bf16"):
        noise = streams.chain_noise(rng.POSTERIOR_NOISE, nz)
        with autocast(precision, "cpu"):
            z[precision] = model.infer(x, z0, steps, s, noise, training=True)
    noise = streams.chain_noise(rng.POSTERIOR_NOISE, nz)
    drift = z["fp32"] - z0 - s * sum(noise(i) for i in range(steps))
    error = (z["bf16"] - z["fp32"]).norm()
    assert z["bf16"].dtype == torch.float32
    assert error > 0  # bf16 really ran
    assert error / drift.norm() < 8 * U
    assert error / (z["fp32"] - z0).norm() < 2 * U


def test_bf16_training_resumes_bitwise_with_float32_state(tmp_path, digits):
    cfg = tiny_config("train.precision=bf16")
    full, metrics = assert_resume_matches(cfg, tmp_path, 6, digits)
    assert full["config"]["train"]["precision"] == "bf16"
    for name, value in full["model"].items():
        assert not value.is_floating_point() or value.dtype == torch.float32, name
    for state in full["opt_g"]["state"].values():
        assert all(v.dtype == torch.float32 for v in state.values())
    assert full["bank"]["bank"].dtype == torch.float32

    # The same run in float32: bf16 changed the numbers, by little.
    train(tiny_config(), tmp_path / "fp32", progress=False, data=digits)
    reference = read_metrics(tmp_path / "fp32")
    bf16_loss = [m["loss_g"] for m in metrics]
    fp32_loss = [m["loss_g"] for m in reference]
    assert bf16_loss != fp32_loss
    assert bf16_loss == pytest.approx(fp32_loss, rel=1e-3)  # measured: 2e-5 at most


def test_precision_is_validated():
    with pytest.raises(
        LatentEBMError, match=re.escape("'train.precision' must be one of fp32, bf16")
    ):
        validate(tiny_config("train.precision=fp16"))
