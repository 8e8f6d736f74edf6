"""Evaluations: AUPRC, reconstruction of an exact generator, SIR, the hold-out split, and
every eval command on a tiny digits run with its bad inputs."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from latent_ebm.data import Dataset, holdout_split, to_float
from latent_ebm.evaluation import auprc, evaluate_run, fid_at, recon_mse
from latent_ebm.model import LatentEBM
from latent_ebm.priors import Prior
from latent_ebm.sampling import sample_latents
from latent_ebm.train import train
from tests.conftest import run_cli, tiny_config


def test_auprc_matches_scikit_learn():
    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(5, 400))
        labels = rng.random(n) < rng.uniform(0.05, 0.6)
        labels[0] = True
        scores = rng.normal(size=n) + labels * rng.uniform(0, 2)
        if trial % 2:  # ties
            scores = np.round(scores, 1)
        assert auprc(labels, scores) == pytest.approx(average_precision_score(labels, scores))


def test_auprc_separable_anomalies():
    labels = np.r_[np.zeros(900), np.ones(100)]
    scores = np.r_[np.random.default_rng(1).normal(0, 1, 900), np.full(100, 10.0)]
    assert auprc(labels, scores) >= 0.95
    assert auprc(labels, scores) == pytest.approx(1.0)


class _Identity(torch.nn.Module):
    """A 'generator' whose output is its latent reshaped to 1x4x4: any image has a latent."""

    def forward(self, z):
        return z.view(-1, 1, 4, 4)


def test_recon_mse_of_an_exact_generator_is_zero():
    """g(z) = z can reproduce any x. With a flat prior the posterior is N(x, sigma^2 I), so
    the MSE is the chain's stationary variance: sigma^2 / (1 - h / (2 sigma^2)) for the
    unadjusted Langevin step h = s^2 / 2 -- about 1e-4 here, ~0 on the [-1, 1] scale."""
    images = torch.randint(0, 256, (30, 1, 4, 4), dtype=torch.uint8)

    class Flat(Prior):
        def log_prob(self, z):
            return torch.zeros(len(z))

    sigma, s = 0.01, 0.005
    model = LatentEBM(_Identity(), Flat(16), sigma=sigma)
    mse = recon_mse(model, images, steps=200, step_size=s, batch_size=7)
    h = s**2 / 2
    assert mse == pytest.approx(sigma**2 / (1 - h / (2 * sigma**2)), rel=0.1)
    assert mse < 2e-4
    # The same model with a step of zero leaves z at N(0, I): a large error.
    assert recon_mse(model, images, steps=0, step_size=s) > 0.3


class _KnownRatio(Prior):
    """p(z) proportional to exp(a . z) N(z; 0, I) = N(a, I): the SIR weights are exp(a . z)."""

    def __init__(self, a):
        super().__init__(len(a))
        self.register_buffer("a", a)

    def log_prob(self, z):
        return z @ self.a - 0.5 * z.pow(2).sum(-1)


def test_sir_reweights_towards_the_target_mean():
    a = torch.tensor([1.0, -0.5])
    model = LatentEBM(_Identity(), _KnownRatio(a), sigma=1.0)
    z = sample_latents(model, 20_000, method="sir", proposals=50, seed=0, batch_size=5000)
    assert torch.allclose(z.mean(0), a, atol=0.05)
    assert torch.allclose(z.std(0), torch.ones(2), atol=0.05)
    again = sample_latents(model, 20_000, method="sir", proposals=50, seed=0, batch_size=5000)
    assert torch.equal(z, again)


def test_langevin_sampling_matches_the_target_mean():
    a = torch.tensor([1.0, -0.5])
    model = LatentEBM(_Identity(), _KnownRatio(a), sigma=1.0)
    z = sample_latents(model, 5000, method="langevin", steps=300, step_size=0.3, seed=1)
    assert torch.allclose(z.mean(0), a, atol=0.06)


class _Flat:
    """Features that are the pixels themselves (``uint8`` scaled to ``[-1, 1]``)."""

    name, dim = "flat", 64

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = to_float(images) if images.dtype == torch.uint8 else images
        return x.flatten(1).double()


def test_fid_at_of_shifted_images_is_the_squared_shift(digits):
    """Images that are the training images moved by ``c`` in every pixel have the same
    covariance and a mean ``c`` away in each of 64 dimensions: FID ``64 c^2`` exactly; the
    training images themselves give 0."""
    images = digits.train_x[:400]

    class Stub:
        def __init__(self, shift: float):
            self.shift = shift

        def decode(self, z: torch.Tensor) -> torch.Tensor:
            return to_float(images[z[:, 0].long()]) + self.shift

    index = torch.arange(len(images)).double()[:, None]
    assert fid_at(Stub(0.0), index, images, _Flat()) == pytest.approx(0.0, abs=1e-6)
    assert fid_at(Stub(0.1), index, images, _Flat(), batch_size=64) == pytest.approx(0.64, rel=1e-4)


def test_holdout_split_follows_the_protocol(digits):
    split = holdout_split(digits, 3, seed=0)
    n = len(digits.train_y) + len(digits.test_y)
    threes = int((torch.cat([digits.train_y, digits.test_y]) == 3).sum())
    assert 3 not in split.train_y.tolist()
    assert len(split.train_y) + len(split.test_y) == n  # a partition of train + test
    assert int((split.test_y == 3).sum()) == threes  # every held-out image is in test
    normal_test = int((split.test_y != 3).sum())
    assert abs(normal_test - (0.2 * n - 0.2 * threes)) < 40  # about 20% of the normal images
    assert torch.equal(holdout_split(digits, 3, seed=0).train_x, split.train_x)
    assert split.holdout == 3


def _tiny_run(tmp_path, digits, *extra):
    run = tmp_path / "run"
    train(tiny_config(*extra), run, progress=False, data=digits)
    return run


def test_eval_recon_and_sample_commands(tmp_path, digits, capsys):
    run = _tiny_run(tmp_path, digits)
    code, out, err = run_cli(["eval", run, "--metric", "recon", "--no-progress"], capsys)
    assert code == 0, err
    report = json.loads((run / "eval/recon.json").read_text())
    assert report["split"] == "test" and report["n"] == 360 and 0 < report["value"] < 4
    assert report["settings"] == {"steps": 4, "step_size": 0.1, "start": "noise", "seed": 0}
    assert f"{report['value']:.4f}" in out
    code, _, _ = run_cli(["eval", run, "--metric", "recon", "--no-progress"], capsys)
    assert json.loads((run / "eval/recon.json").read_text())["value"] == report["value"]

    for method in ["langevin", "sir"]:
        code, out, err = run_cli(["sample", run, "--n", 12, "--method", method], capsys)
        assert code == 0, err
        npz = np.load(run / "samples" / f"{method}.npz")
        assert npz["images"].shape == (12, 1, 8, 8) and npz["images"].dtype == np.uint8
        assert npz["z"].shape == (12, 4)
        assert (run / "samples" / f"{method}.png").stat().st_size > 0

    code, out, err = run_cli(["plot", run], capsys)
    assert code == 0, err
    for name in ["samples.png", "reconstructions.png", "transition.png", "nce_loss.png"]:
        assert (run / name).stat().st_size > 0


def test_eval_anomaly_on_a_holdout_run(tmp_path, digits, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(
        [
            "train",
            "--out",
            run,
            "--holdout",
            1,
            "--no-eval",
            "--no-progress",
            "--set",
            "train.iters=10",
            "--set",
            "train.post_steps=3",
            "--set",
            "model.ngf=4",
            "--set",
            "prior.stages=2",
        ],
        capsys,
    )
    assert code == 0, err
    code, _out, err = run_cli(
        ["eval", run, "--metric", "anomaly", "--no-progress", "--last", 3], capsys
    )
    assert code == 0, err
    report = json.loads((run / "eval/anomaly.json").read_text())
    assert report["holdout"] == 1 and len(report["values"]) == 3
    assert report["iterations"] == [8, 9, 10]
    assert 0 < report["value"] <= 1
    assert report["std"] == pytest.approx(np.std(report["values"]))
    assert not (run / "eval/.anomaly.partial.json").exists()
    _anomaly_resumes_at_the_next_snapshot(run, report["values"])


def _anomaly_resumes_at_the_next_snapshot(run, values):
    """An anomaly evaluation killed after two of three snapshots computes only the third when
    run again, and reports exactly the values of an uninterrupted one; other settings, or an
    unreadable kept file, compute every snapshot again."""
    import latent_ebm.evaluation as evaluation

    calls = []
    real = evaluation.anomaly_auprc

    def counted(*args, **kwargs):
        if len(calls) == 2 and kill:
            raise RuntimeError("killed")
        calls.append(kwargs["seed"])
        return real(*args, **kwargs)

    def evaluate(seed=0):
        calls.clear()
        return evaluate_run(run, "anomaly", last=3, seed=seed, progress=False)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evaluation, "anomaly_auprc", counted)
        kill = True
        with pytest.raises(RuntimeError, match="killed"):
            evaluate()
        kept = json.loads((run / "eval/.anomaly.partial.json").read_text())
        assert len(kept["done"]) == 2
        kill = False
        assert evaluate()["values"] == values and calls == [0]
        assert not (run / "eval/.anomaly.partial.json").exists()
        kill = True
        with pytest.raises(RuntimeError):
            evaluate(seed=1)
        kill = False
        assert evaluate(seed=0)["values"] == values and len(calls) == 3  # other settings
        (run / "eval/.anomaly.partial.json").write_text("{not json")
        with pytest.warns(UserWarning, match="unreadable"):
            assert evaluate()["values"] == values and len(calls) == 3


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["eval", "{tmp}/nowhere", "--metric", "recon"], "does not exist"),
        (["eval", "{tmp}/empty", "--metric", "recon"], "not a run directory"),
        (["eval", "{run}", "--metric", "bleu"], "unknown metric 'bleu'"),
        (["eval", "{run}", "--metric", "anomaly"], "trained with --holdout"),
        (
            [
                "eval",
                "{run}",
                "--metric",
                "fid",
                "--features",
                "inception",
                "--weights",
                "{tmp}/missing.pth",
            ],
            "missing.pth",
        ),
        (["sample", "{run}", "--method", "gibbs"], "unknown --method 'gibbs'"),
        (["train", "--out", "{tmp}/h", "--holdout", "11"], "holdout class 11 is not a label"),
    ],
)
def test_eval_bad_inputs_are_one_line(tmp_path, digits, capsys, args, expected):
    run = _tiny_run(tmp_path, digits)
    (tmp_path / "empty").mkdir()
    (tmp_path / "norun").mkdir()
    args = [a.replace("{tmp}", str(tmp_path)).replace("{run}", str(run)) for a in args]
    code, _, err = run_cli(args, capsys)
    assert code != 0
    assert err.startswith("error: ") and expected in err, err
    assert len(err.splitlines()) == 1


def test_checkpointless_run_dir(tmp_path, digits, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("data:\n  name: digits\n")
    code, _, err = run_cli(["eval", run, "--metric", "recon"], capsys)
    assert code == 1 and "no checkpoint" in err and "latent-ebm train" in err


def test_to_float_inverse():
    from latent_ebm.data import to_uint8

    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    assert torch.equal(to_uint8(to_float(x)), x)
    assert isinstance(Dataset, type)
