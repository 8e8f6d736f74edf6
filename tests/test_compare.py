"""``latent-ebm compare``: runs grouped over seeds, the differing config fields, the final
metrics as mean ± SE, the overlaid curves, and the bad inputs."""

import json

import numpy as np
import pytest
import yaml

from latent_ebm.evaluation import evaluate_run
from latent_ebm.experiments.stats import summarize
from latent_ebm.rundir import read_metrics, split_metrics
from latent_ebm.train import train
from tests.conftest import run_cli, tiny_config

pytestmark = pytest.mark.filterwarnings("ignore:each stage lasts")


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("LATENT_EBM_CACHE", str(tmp_path_factory.mktemp("classifiers")))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digits):
    """Two seeds of K=2 with in-training evaluations, one run of K=1 without: each with its
    recon report."""
    root = tmp_path_factory.mktemp("runs")
    made = {}
    for name, extra in [
        ("k2", ["train.eval_every=6", "train.eval_n=40"]),
        ("k2-seed1", ["train.eval_every=6", "train.eval_n=40", "train.seed=1"]),
        ("k1", ["prior.stages=1"]),
    ]:
        train(tiny_config(*extra), root / name, progress=False, data=digits)
        evaluate_run(root / name, "recon", progress=False)
        made[name] = root / name
    return made


def _rows(markdown):
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return [
        dict(zip(head, [c.strip() for c in r.strip("|").split("|")], strict=True))
        for r in lines[1:]
    ]


def test_compare_groups_seeds_and_shows_mean_and_se(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    code, stdout, err = run_cli(
        ["compare", runs["k2"], runs["k2-seed1"], runs["k1"], "--out", out], capsys
    )
    assert code == 0, err
    text = (out / "compare.md").read_text()
    assert text in stdout and "Comparison of 3 runs on digits" in text
    rows = _rows(text)
    # Two rows: the seeds of K=2 together; the differing fields are the K=2 run's eval
    # settings and prior.stages, never the seed.
    assert [r["runs"] for r in rows] == ["k2, k2-seed1", "k1"]
    assert [r["seeds"] for r in rows] == ["0, 1", "0"]
    assert [r["`prior.stages`"] for r in rows] == ["2", "1"]
    assert [r["`train.eval_every`"] for r in rows] == ["6", "0"]
    assert "`train.seed`" not in rows[0]
    recon = [
        json.loads((runs[n] / "eval/recon.json").read_text())["value"] for n in ("k2", "k2-seed1")
    ]
    assert (
        rows[0]["recon MSE (↓)"] == summarize(recon).format(4) and "±" in rows[0]["recon MSE (↓)"]
    )
    k1 = json.loads((runs["k1"] / "eval/recon.json").read_text())["value"]
    assert rows[1]["recon MSE (↓)"] == f"{k1:.4f}"
    fids = [split_metrics(read_metrics(runs[n]))[1][-1]["eval"]["fid"] for n in ("k2", "k2-seed1")]
    assert rows[0]["FID in training, last"] == summarize(fids).format(2)
    assert rows[1]["FID in training, last"] == "-"
    assert rows[0]["iterations"] == "12"
    assert "- recon MSE (↓): steps=4, step_size=0.1, start=noise, seed=0, split: test" in text
    png = out / "compare.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_bad_input_is_one_line_and_writes_nothing(runs, tmp_path, capsys):
    (tmp_path / "notrun").mkdir()
    (tmp_path / "notrun" / "x.txt").write_text("x")
    other = tmp_path / "other"
    other.mkdir()
    cfg = yaml.safe_load((runs["k1"] / "config.yaml").read_text())
    cfg["data"]["name"] = "mnist"
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "cmp"
    for args, expected in [
        ([tmp_path / "notrun"], "not a run directory (no config.yaml)"),
        ([tmp_path / "nowhere"], "not a run directory (no such folder)"),
        ([runs["k1"], other], "runs on different data sets"),
    ]:
        code, _, err = run_cli(["compare", *args, "--out", out], capsys)
        assert code == 1 and err.startswith("error: ") and expected in err, err
        assert len(err.splitlines()) == 1
        assert not out.exists()


def test_compare_curves_average_the_seeds(runs):
    from latent_ebm.experiments.comparison import _curves, read_run_record

    group = [read_run_record(runs[n]) for n in ("k2", "k2-seed1")]
    its, _, mean, se = _curves(group, "losses", "loss_g")
    losses = [
        [m["loss_g"] for m in split_metrics(read_metrics(runs[n]))[0]] for n in ("k2", "k2-seed1")
    ]
    assert list(its) == [2, 4, 6, 8, 10, 12]
    assert np.allclose(mean, np.mean(losses, 0))
    assert np.allclose(se, np.std(losses, 0, ddof=1) / np.sqrt(2))
