"""benchmarks/prior_cut.py: the FID of a trained adaptive prior cut to its first k ratios; the
full cut is the trained model's own FID."""

import json

import pytest

from latent_ebm.evaluation import fid
from latent_ebm.evaluation.classifier import classifier_features
from latent_ebm.rundir import load_run
from latent_ebm.train import train
from tests.conftest import load_script, tiny_config


@pytest.mark.filterwarnings("ignore:each stage lasts")
def test_cut_ends_are_the_trained_and_the_gaussian_prior(tmp_path, digits, monkeypatch, capsys):
    monkeypatch.setenv("LATENT_EBM_CACHE", str(tmp_path / "cache"))
    train(tiny_config("prior.kind=adaptive", "prior.stages=2"), tmp_path / "run", data=digits)
    assert load_script("prior_cut").main([str(tmp_path / "run"), "--n", "100"]) == 0
    values = json.loads((tmp_path / "run/eval/prior_cut.json").read_text())["fid"]
    assert len(values) == 3 and len(capsys.readouterr().out.splitlines()) == 3

    cfg, model, _ = load_run(tmp_path / "run")
    features = classifier_features(digits)
    chain = {"steps": cfg.sample.steps, "step_size": cfg.sample.step_size}
    assert values[2] == pytest.approx(fid(model, digits.train_x, features, n=100, **chain))
    # With no ratio the prior is N(0, I), sampled by the same chain (not by exact draws).
    assert values[0] != pytest.approx(values[1]) and values[0] != pytest.approx(values[2])
