"""The likelihood benchmark scripts (benchmarks/likelihood.py, likelihood_on_generator.py) on
tiny digits runs: their tables hold the library's reports, N(0, I) is exactly normalised, and a
rerun recomputes nothing."""

import json
import math
import sys

import pytest

from latent_ebm.train import train
from tests.conftest import load_script, tiny_config


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("LATENT_EBM_CACHE", str(tmp_path_factory.mktemp("classifiers")))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digits):
    """Tiny runs <model>-seed<s> for gaussian and nce, seeds 0 and 1."""
    root = tmp_path_factory.mktemp("runs")
    for kind in ("gaussian", "nce"):
        for seed in (0, 1):
            cfg = tiny_config(f"prior.kind={kind}", f"train.seed={seed}", "refit.steps=0")
            train(cfg, root / f"{kind}-seed{seed}", progress=False, data=digits)
    return root


def test_end_to_end_table(runs, tmp_path, monkeypatch):
    script = load_script("likelihood")
    out = tmp_path / "lik"
    fast = ["--seeds", "0", "1", "--models", "gaussian", "nce", "--out", str(out)]
    assert script.main([str(runs), *fast]) == 0
    results = json.loads(out.with_suffix(".json").read_text())
    for model in ("gaussian", "nce"):
        for seed in ("0", "1"):
            reports = results[model][seed]
            on_disk = json.loads((runs / f"{model}-seed{seed}" / "eval" / "nll.json").read_text())
            assert reports["nll"]["value"] == on_disk["value"]
    assert results["gaussian"]["0"]["prior-nll"]["stages"][0]["log_z"] == 0.0
    assert [s["stage"] for s in results["nce"]["1"]["prior-nll"]["stages"]] == [0, 1]
    nll = [results["nce"][s]["nll"]["value"] for s in ("0", "1")]
    table = out.with_suffix(".md").read_text()
    mean, se = sum(nll) / 2, abs(nll[0] - nll[1]) / 2  # SE of two values: |a - b| / 2
    ok = sum(results["nce"][s]["prior-nll"]["converged"] for s in ("0", "1"))
    assert f"| nce | 2 | {ok} of 2 | {mean:.2f} ± {se:.2f} |" in table
    assert out.with_suffix(".png").stat().st_size > 0
    assert f"the first {results['nce']['0']['nll']['n']} test images" in table
    # A rerun reads the reports: nothing is evaluated again.
    monkeypatch.setattr(script, "evaluate_run", lambda *a, **k: pytest.fail("recomputed"))
    assert script.main([str(runs), *fast]) == 0
    assert out.with_suffix(".md").read_text() == table


@pytest.mark.filterwarnings("ignore:each stage lasts")
def test_same_generator_table(runs, tmp_path, monkeypatch):
    pog, lik = load_script("priors_on_generator"), load_script("likelihood_on_generator")
    generators = [str(runs / f"nce-seed{s}") for s in (0, 1)]
    out = tmp_path / "pog"
    sets = ["--set", "refit.steps=20", "--set", "refit.samples=200"]
    assert (
        pog.main([*generators, "--priors", "nce", *sets, "--fid-n", "20", "--out", str(out)]) == 0
    )
    labels = ["gaussian", "own", "nce"]
    assert lik.main([str(out), *generators, "--priors", *labels, "--fid-n", "0"]) == 0
    rows = {(r["run"], r["label"]): r for r in json.loads((out / "likelihood.json").read_text())}
    for run in generators:
        gaussian = rows[(run, "gaussian")]["stages"]
        assert len(gaussian) == 1 and gaussian[0]["log_z"] == 0.0 and gaussian[0]["se"] > 0
        own = rows[(run, "own")]["stages"]
        # stage 0 of every prior is N(0, I) on the same samples: the same number
        assert own[0]["nll"] == pytest.approx(gaussian[0]["nll"], abs=1e-9)
        assert math.isfinite(rows[(run, "nce")]["stages"][1]["log_z"])
    table = (out / "likelihood.md").read_text()
    assert "| own | 2 |" in table and "| nce | 2 |" in table
    monkeypatch.setattr(lik, "prior_normalisers", lambda *a, **k: pytest.fail("recomputed"))
    assert lik.main([str(out), *generators, "--priors", *labels, "--fid-n", "0"]) == 0
    assert (out / "likelihood.md").read_text() == table


def test_recipe_gates(runs, tmp_path, monkeypatch):
    """benchmarks/recipe_gates.py: each arm's values are the runs' reports, and each gate is the
    project's paired criterion of them."""
    script = load_script("recipe_gates")
    paper, cand = tmp_path / "paper", tmp_path / "cand"
    for arm, kind in ((paper, "gaussian"), (cand, "nce")):
        arm.mkdir()
        for s in (0, 1):
            (arm / f"m-seed{s}").symlink_to(runs / f"{kind}-seed{s}")
    out = tmp_path / "gates"
    args = ["--paper", str(paper), "--candidate", str(cand), "--model", "m", "--seeds", "0", "1"]
    args += [
        "--fid-n",
        "50",
        "--out",
        str(out),
        "--time",
        "1.49x (demo)",
        "--time-verdict",
        "fails",
    ]
    assert script.main(args) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    for arm, kind in (("paper", "gaussian"), ("candidate", "nce")):
        for s in (0, 1):
            eval_dir = runs / f"{kind}-seed{s}" / "eval"
            row = record[arm][s]
            assert (
                row["fid-500steps"]
                == json.loads((eval_dir / "fid-500steps.json").read_text())["value"]
            )
            nll = json.loads((eval_dir / "prior-nll.json").read_text())["stages"][-1]["nll"]
            assert row["prior-nll"] == nll and set(row) == set(script.REPORTS)
    fid = [[record[arm][s]["fid"] for s in (0, 1)] for arm in ("candidate", "paper")]
    d, verdict = script.paired_present(*fid)
    table = out.with_suffix(".md").read_text()
    assert f"| FID lower than paper's (100-step chain) | {d.format(3)} | {verdict} |" in table
    ratios = [record["candidate"][s]["fid-smc"] / record["candidate"][s]["fid"] for s in (0, 1)]
    s, verdict = script.within(ratios)
    assert (
        f"| SMC FID within 10% of its 100-step FID (ratio) | {s.format(3)} | {verdict} |" in table
    )
    assert "| training wall time no longer than paper's | 1.49x (demo) | fails |" in table
    # --table reads the reports: nothing is evaluated again.
    lik = sys.modules["likelihood"]  # the module recipe_gates computes its reports with
    monkeypatch.setattr(lik, "evaluate_run", lambda *a, **k: pytest.fail("recomputed"))
    assert script.main([*args, "--table"]) == 0
    assert (
        out.with_suffix(".json").read_text().replace(" --table", "")
        == json.dumps({**record, "command": record["command"]}, indent=2) + "\n"
    )
