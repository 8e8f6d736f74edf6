"""Sharpening a prior (Prior.sharpened, sample/eval --sharpen) and benchmarks/sharpening.py."""

import json

import numpy as np
import pytest
import torch

from latent_ebm.langevin import mala
from latent_ebm.priors.base import Refit, gaussian_log_prob
from tests.conftest import load_script, run_cli

from .test_evaluate import _tiny_run
from .test_refit import _prior


@pytest.mark.parametrize("kind", ["nce", "adaptive", "tre", "lebm", "gaussian"])
def test_sharpening_multiplies_the_learned_log_density_and_leaves_the_prior(kind):
    prior = _prior(kind, stages=3)
    z = torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = prior.log_prob(z) - gaussian_log_prob(z)
        sharp = prior.sharpened(2.5)
        after = sharp.log_prob(z) - gaussian_log_prob(z)
        assert torch.allclose(after, 2.5 * before, atol=1e-5)
        assert torch.equal(prior.log_prob(z) - gaussian_log_prob(z), before)  # a copy
    spread = load_script("sharpening").spread
    assert spread(sharp, z) == pytest.approx(2.5 * spread(prior, z), rel=1e-5, abs=1e-9)
    with pytest.raises(ValueError, match="positive"):
        prior.sharpened(0.0)


def test_a_sharpened_ratio_prior_samples_the_known_sharpened_density():
    # q = N(m, I) against N(0, I): the refit learns log r = m.z - |m|^2 / 2, so
    # N(0, I) r^beta is N(beta m, I) for any beta. Exact (MALA) samples of the prior sharpened
    # by 2 sit at 2 m with unit variance.
    m = torch.tensor([0.8, -0.4])
    z_q = torch.randn(6000, 2, generator=torch.Generator().manual_seed(0)) + m
    prior = _prior("nce")
    prior.refit(z_q, Refit(steps=1500, batch=500, lr=3e-3, seed=0))
    z0 = torch.randn(4000, 2, generator=torch.Generator().manual_seed(1))
    z, _ = mala(z0, prior.sharpened(2.0).log_prob, 400, 0.5, generator=torch.Generator())
    assert z.mean(0).tolist() == pytest.approx((2 * m).tolist(), abs=0.12)
    assert z.var(0).mean().item() == pytest.approx(1.0, abs=0.12)


def test_sample_and_eval_sharpen(tmp_path, digits, capsys):
    run = _tiny_run(tmp_path, digits)
    code, _, err = run_cli(["sample", run, "--n", 8, "--sharpen", 2, "--no-progress"], capsys)
    assert code == 0, err
    sharp = np.load(run / "samples" / "langevin-sharpen2.npz")["z"]
    code, _, err = run_cli(["sample", run, "--n", 8, "--no-progress"], capsys)
    assert code == 0, err
    assert not np.array_equal(sharp, np.load(run / "samples" / "langevin.npz")["z"])
    args = ["eval", run, "--metric", "fid", "--n", 50, "--no-progress", "--sharpen", 1.5]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert json.loads((run / "eval" / "fid-sharpen1.5.json").read_text())["sharpen"] == 1.5
    for bad, message in [
        (["eval", run, "--metric", "recon", "--sharpen", 2], "--sharpen applies to --metric fid"),
        (["sample", run, "--sharpen", 0], "--sharpen must be positive"),
    ]:
        code, _, err = run_cli(bad, capsys)
        assert code != 0 and message in err and len(err.splitlines()) == 1, err
