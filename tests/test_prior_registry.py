"""Adding a prior is one class and one registry line: a toy prior defined here, registered for
this test only, trains, evaluates and dry-runs through the command line without any other
file knowing it. Only the public entry points are used (``latent_ebm.cli.main``,
``latent_ebm.PRIORS``, ``latent_ebm.Prior``), so the test does not depend on where the library
keeps its run-directory or evaluation code."""

import json
import math

import pytest
import torch
from torch import nn

import latent_ebm
from latent_ebm.cli import main
from tests.conftest import TINY

# The shared tiny digits run (model.ratio_hidden and prior.stages are unused by the toy).
TOY = [*TINY, "prior.kind=toy", "prior.lr=0.01"]


class ToyPrior(latent_ebm.Prior):
    """``N(mu, I)`` with a trainable mean ``mu``, learned by maximum likelihood on the
    posterior samples: ``mu`` follows their mean."""

    def __init__(self, nz: int, lr: float) -> None:
        super().__init__(nz)
        self.mean = nn.Parameter(torch.zeros(nz))
        self.optims = [torch.optim.Adam([self.mean], lr=lr)]

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.model.nz, cfg.prior.lr)

    def log_prob(self, z):
        return -0.5 * (z - self.mean).pow(2).sum(-1)

    def train_step(self, z_post, streams, bank):
        loss = -self.log_prob(z_post.detach()).mean()
        self.optims[0].zero_grad(set_to_none=True)
        loss.backward()
        self.optims[0].step()
        return {"loss_toy": loss.item()}


@pytest.fixture(autouse=True)
def _toy_registered(monkeypatch, tmp_path):
    """``toy`` in the registry for this test only; the FID classifier kept out of the user's
    cache."""
    monkeypatch.setitem(latent_ebm.PRIORS, "toy", ToyPrior)
    monkeypatch.setenv("LATENT_EBM_CACHE", str(tmp_path / "cache"))


def _cli(args, capsys):
    capsys.readouterr()
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_registered_prior_trains_evaluates_and_dry_runs(tmp_path, capsys):
    sets = [a for s in TOY for a in ("--set", s)]
    run = tmp_path / "run"
    code, _, err = _cli(["train", "--out", run, "--no-progress", "--no-eval", *sets], capsys)
    assert code == 0, err

    # The checkpoint holds the toy's parameter, moved away from its zero start.
    [ckpt] = run.glob("*.pt")
    state = torch.load(ckpt, weights_only=False)
    mean = state["model"]["prior.mean"]
    assert mean.shape == (4,) and torch.isfinite(mean).all()
    assert mean.abs().min() > 0
    assert (run / "metrics.jsonl").exists()
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(m["loss_toy"]) for m in logged)

    for metric, extra in [("recon", []), ("fid", ["--n", 200])]:
        args = ["eval", run, "--metric", metric, "--no-progress", *extra]
        code, out, err = _cli(args, capsys)
        assert code == 0, err
        report = json.loads((run / "eval" / f"{metric}.json").read_text())
        assert math.isfinite(report["value"]) and report["value"] >= 0, report
        assert f"{report['value']:.4f}" in out or f"{report['value']:.2f}" in out

    dry = ["train", "--out", tmp_path / "dry", "--dry-run", *sets]
    code, out, err = _cli(dry, capsys)
    assert code == 0, err
    assert "kind: toy" in out
    assert not (tmp_path / "dry").exists()


def test_the_registry_drives_config_validation(capsys, tmp_path):
    """A kind that is not registered is refused, naming the registered ones."""
    bad = ["train", "--out", tmp_path / "run", "--dry-run", "--set", "prior.kind=toy2"]
    code, _, err = _cli(bad, capsys)
    assert code != 0
    assert "'prior.kind' must be one of" in err and "toy" in err
