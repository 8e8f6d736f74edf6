"""`reproduce --sharpen`: FID of the sharpened prior in the tables, and the beta of each seed
chosen on the model's other seeds (latent_ebm.experiments.columns)."""

import json
import math

import pytest

from latent_ebm.errors import LatentEBMError
from latent_ebm.evaluation import evaluate_run
from latent_ebm.experiments import reproduce
from latent_ebm.experiments.columns import SHARPENED, choose_sharpening, column, sharpen_key
from tests.conftest import run_cli


def _rows(label: str, fids: dict[float, list[float]]) -> list[dict]:
    """One row per seed of a model, with its FID at each beta."""
    seeds = range(len(next(iter(fids.values()))))
    return [
        {
            "label": label,
            "holdout": None,
            "seed": s,
            "reports": {sharpen_key(b): {"value": v[s]} for b, v in fids.items()},
        }
        for s in seeds
    ]


def test_each_seed_takes_the_beta_best_on_the_other_seeds():
    # Seed 1's own best is beta 3 (4.0), but seeds 0 and 2 favour beta 2 (mean 5.5): it gets 2.
    rows = _rows("a", {1.0: [10.0, 10.0, 10.0], 2.0: [5.0, 20.0, 6.0], 3.0: [30.0, 4.0, 30.0]})
    alone = _rows("b", {1.0: [7.0], 2.0: [1.0]})  # one seed: nothing to choose on
    tie = _rows("c", {1.0: [3.0, 3.0], 2.0: [3.0, 3.0], 4.0: [math.nan, 1.0]})
    choose_sharpening(rows, [2.0, 3.0])
    choose_sharpening(alone, [2.0])
    choose_sharpening(tie, [2.0, 4.0])
    got = [(r["reports"][SHARPENED]["sharpen"], r["reports"][SHARPENED]["value"]) for r in rows]
    assert got == [(1.0, 10.0), (2.0, 20.0), (1.0, 10.0)]
    assert rows[1]["reports"][SHARPENED]["chosen_on"] == [0, 2]
    assert SHARPENED not in alone[0]["reports"]
    # A tie goes to the smaller beta; a NaN FID on the other seed counts as the worst.
    assert [r["reports"][SHARPENED]["sharpen"] for r in tie] == [4.0, 1.0]
    # Without --sharpen nothing is chosen, and rows without an FID (anomaly) are fine.
    plain = _rows("d", {1.0: [3.0, 4.0]})
    auprc = [{"label": "e", "holdout": 1, "seed": s, "reports": {"anomaly": {}}} for s in (0, 1)]
    choose_sharpening(plain + auprc, [])
    assert all(SHARPENED not in r["reports"] for r in plain + auprc)


def test_sharpen_columns():
    assert sharpen_key(1.0) == "fid" and sharpen_key(2.0) == "fid-sharpen2"
    col = column("fid-sharpen1.5")
    assert col.metric == "fid" and dict(col.request) == {"sharpen": 1.5}
    with pytest.raises(KeyError):
        column("fid-sharpenx")


@pytest.mark.filterwarnings("ignore:each stage lasts")
def test_reproduce_sharpen_over_two_seeds(tmp_path, capsys):
    out = tmp_path / "repro"
    args = ["reproduce", "compare", "--dataset", "digits", "--scale", "tiny", "--out", out]
    args += ["--seeds", 2, "--models", "nce", "adaptive-K4", "--sharpen", 2, 1, 2]
    code, stdout, err = run_cli([*args, "--no-progress"], capsys)
    assert code == 0, err
    results = json.loads((out / "compare.json").read_text())
    assert results["sharpen"] == [2.0] and results["command"].endswith("--sharpen 2")
    rows = results["models"]
    for r in rows:
        assert r["reports"]["fid-sharpen2"]["sharpen"] == 2.0
        # With two seeds, a run's beta is the better one on the model's other run.
        other = next(o for o in rows if o["label"] == r["label"] and o is not r)
        best = min(("fid", "fid-sharpen2"), key=lambda k: other["reports"][k]["value"])
        assert r["reports"][SHARPENED]["value"] == r["reports"][best]["value"]
    # The report is the FID of the sharpened prior, as `eval --sharpen 2` computes it.
    run = out / "runs" / "adaptive-K4-seed1"
    again = evaluate_run(run, "fid", n=500, seed=1, sharpen=2.0, progress=False, name="check")
    assert again["value"] == rows[-1]["reports"]["fid-sharpen2"]["value"]
    assert "FID, β chosen on other seeds (↓)" in stdout and "| β chosen, by seed |" in stdout
    claim = "| adaptive K=4 beats nce (FID, β chosen on other seeds (↓)) |"
    line = next(x for x in stdout.splitlines() if x.startswith(claim))
    assert line.rstrip(" |").split("| ")[-1] in ("holds", "fails", "not resolved")
    # A rerun evaluates nothing again.
    code, stdout, err = run_cli([*args, "--no-progress"], capsys)
    assert code == 0 and "evaluating " not in stdout and ": training (" not in stdout, err


def test_sharpen_errors(tmp_path):
    kw = {"dataset": "digits", "scale": "tiny", "progress": False, "echo": lambda _: None}
    with pytest.raises(LatentEBMError, match="--sharpen must be positive"):
        reproduce("compare", tmp_path / "a", sharpen=[0.0], **kw)
    with pytest.raises(LatentEBMError, match="not to 'anomaly'"):
        reproduce("anomaly", tmp_path / "b", sharpen=[2.0], **kw)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
