"""The priors-on-one-generator benchmark script (benchmarks/priors_on_generator.py) on two tiny
digits runs: each prior's settings, the paired verdict, known answers for the Gaussian prior
and for a refitted prior, and a resumable rerun."""

import copy
import json

import pytest

from latent_ebm.config import apply_overrides, resolve_config, validate
from latent_ebm.evaluation import fid
from latent_ebm.evaluation.classifier import classifier_features
from latent_ebm.files import load_weights
from latent_ebm.priors import build_prior
from latent_ebm.priors.adaptive import AdaptivePrior
from latent_ebm.refit import aggregate_posterior, refit_rows, refit_settings
from latent_ebm.rundir import load_data, load_run
from latent_ebm.sampling import sample_latents
from latent_ebm.train import train
from tests.conftest import TINY, load_script


@pytest.fixture(scope="module")
def pog():
    return load_script("priors_on_generator")


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("LATENT_EBM_CACHE", str(tmp_path_factory.mktemp("classifiers")))


def test_settings_of_a_prior(pog):
    sets = ["refit.steps=40", "adaptive:refit.sampler=chain", "nce/b:prior.lr=1"]
    assert pog.prior_settings("adaptive-K4", sets) == [
        "prior.kind=adaptive",
        "prior.stages=4",
        "refit.steps=40",
        "refit.sampler=chain",
    ]
    assert pog.prior_settings("nce", sets) == ["prior.kind=nce", "refit.steps=40"]
    assert pog.prior_settings("nce/b", sets)[-1] == "prior.lr=1"
    with pytest.raises(SystemExit, match="unknown kind 'flow'"):
        pog.prior_settings("flow-K2", sets)
    with pytest.raises(SystemExit, match="'-K' takes a number of stages, got 'x'"):
        pog.prior_settings("adaptive-Kx", sets)


def test_paired_verdicts(pog):
    s, verdict = pog.paired([10.0, 20.0, 30.0], [12.0, 22.5, 31.5])  # differences -2, -2.5, -1.5
    assert s.mean == pytest.approx(-2.0) and s.se == pytest.approx(0.5 / 3**0.5)
    assert verdict == "holds"  # a beats b on every generator, by far more than the spread
    assert pog.paired([12.0, 22.5, 31.5], [10.0, 20.0, 30.0])[1] == "fails"
    assert pog.paired([1.0, 3.0], [2.0, 2.0])[1] == "not resolved"


@pytest.mark.filterwarnings("ignore:each stage lasts")
def test_script_known_answers_and_rerun(pog, tmp_path, monkeypatch, capsys):
    runs = []
    for seed in (0, 1):
        cfg = resolve_config(None, None, [*TINY, "prior.kind=nce", f"train.seed={seed}"])
        train(cfg, tmp_path / f"nce-{seed}", progress=False)
        runs.append(str(tmp_path / f"nce-{seed}"))
    out = tmp_path / "pog"
    args = [*runs, "--priors", "gaussian", "adaptive-K2", "nce/held"]
    args += ["--set", "refit.steps=30", "--set", "nce/held:refit.holdout=0.2"]
    args += ["--set", "nce/held:refit.check=5", "--fid-n", "100", "--out", str(out)]
    assert pog.main(args) == 0
    results = json.loads((out / "priors_on_generator.json").read_text())["results"]
    by = {(r["run"], r["label"]): r for r in results}

    # Known answers on the second generator, recomputed here by the library.
    cfg, model, _ = load_run(runs[1])
    data = load_data(cfg)
    ext = classifier_features(data)
    chain = {"steps": cfg.sample.steps, "step_size": cfg.sample.step_size}
    gauss = validate(apply_overrides(copy.deepcopy(cfg), ["prior.kind=gaussian"]))
    model.prior = build_prior(gauss)
    expected = fid(model, data.train_x, ext, n=100, seed=1, **chain)
    assert by[(runs[1], "gaussian")]["fid"] == pytest.approx(expected, rel=1e-9)
    adaptive = validate(
        apply_overrides(
            copy.deepcopy(cfg), ["prior.kind=adaptive", "prior.stages=2", "refit.steps=30"]
        )
    )
    _, model, _ = load_run(runs[1])
    z_q = refit_rows(model, data.train_x, cfg)
    model.prior = build_prior(adaptive)
    losses = model.prior.refit(z_q, refit_settings(adaptive))
    assert by[(runs[1], "adaptive-K2")]["refit_losses"] == pytest.approx(losses, rel=1e-6)
    expected = fid(model, data.train_x, ext, n=100, seed=1, **chain)
    assert by[(runs[1], "adaptive-K2")]["fid"] == pytest.approx(expected, rel=1e-6)
    assert by[(runs[0], "gaussian")]["fid"] != by[(runs[1], "gaussian")]["fid"]
    # The held-out stopping rule's record: the updates kept (a multiple of the check, or all
    # 30) and their held-out loss; none for a prior fitted without it.
    held = by[(runs[1], "nce/held")]
    assert len(held["refit_updates"]) == 1 and held["refit_updates"][0] in range(5, 31, 5)
    assert held["refit_held"][0] > 0 and "refit_updates" not in by[(runs[1], "adaptive-K2")]

    md = (out / "priors_on_generator.md").read_text()
    assert "| adaptive-K2 | 2 |" in md and "Ceiling" in md

    # A rerun refits and scores nothing again and writes the same table.
    with monkeypatch.context() as m:
        m.setattr(pog, "sample_latents", lambda *a, **k: pytest.fail("scored again"))
        m.setattr(pog, "refit_rows", lambda *a, **k: pytest.fail("sampled again"))
        assert pog.main(args) == 0
    assert (out / "priors_on_generator.md").read_text() == md

    # --table: the table of what is done; a prior not fitted yet is left out, nothing runs.
    with monkeypatch.context() as m:
        m.setattr(pog, "sample_latents", lambda *a, **k: pytest.fail("scored"))
        assert pog.main([*args[:2], "--priors", "gaussian", "nce", "--table", *args[6:]]) == 0
    assert "| gaussian | 2 |" in (out / "priors_on_generator.md").read_text()
    assert "| nce |" not in (out / "priors_on_generator.md").read_text()

    # A longer chain is scored on the kept priors, without refitting them.
    monkeypatch.setattr(AdaptivePrior, "refit", lambda *a, **k: pytest.fail("refitted again"))
    assert pog.main([*args, "--steps", "9"]) == 0
    again = {
        (r["run"], r["label"]): r
        for r in json.loads((out / "priors_on_generator.json").read_text())["results"]
    }
    assert again[(runs[1], "adaptive-K2")]["fid9"] == pytest.approx(
        fid(model, data.train_x, ext, n=100, seed=1, steps=9, step_size=cfg.sample.step_size),
        rel=1e-6,
    )
    assert again[(runs[1], "adaptive-K2")]["fid"] == by[(runs[1], "adaptive-K2")]["fid"]
    assert "| 9 steps | ratio to FID |" in (out / "priors_on_generator.md").read_text()

    # --classifier2: the same samples also in the second network's features, on the kept
    # priors; the classifier FID is unchanged.
    assert pog.main([*args, "--classifier2"]) == 0
    c2 = {
        (r["run"], r["label"]): r
        for r in json.loads((out / "priors_on_generator.json").read_text())["results"]
    }
    ext2 = classifier_features(data, network="classifier2")
    assert c2[(runs[1], "adaptive-K2")]["fid_classifier2"] == pytest.approx(
        fid(model, data.train_x, ext2, n=100, seed=1, **chain), rel=1e-6
    )
    assert c2[(runs[1], "adaptive-K2")]["fid"] == by[(runs[1], "adaptive-K2")]["fid"]
    assert "in classifier2 features" in (out / "priors_on_generator.md").read_text()

    # benchmarks/memorisation.py on the kept priors: the ratio recomputed by the library.
    memo = load_script("memorisation")
    assert memo.main([str(out), "--priors", "adaptive-K2", "--runs", *runs, "--n", "50"]) == 0
    got = json.loads((out / "memorisation.json").read_text())["adaptive-K2"][1]
    _, model, _ = load_run(runs[1])  # the unseen rows: the run's own chain, under its prior
    unseen = aggregate_posterior(
        model, data.test_x, len(z_q), cfg.train.post_steps, cfg.train.post_step_size, seed=1
    )
    model.prior = build_prior(adaptive)
    model.prior.load_state_dict(load_weights(pog.prior_path(out, runs[1], "adaptive-K2")))
    z = sample_latents(model, 50, steps=cfg.sample.steps, step_size=cfg.sample.step_size, seed=1)
    assert got["ratio"] == pytest.approx(memo.memorisation(z, z_q, unseen)["ratio"], rel=1e-6)
    assert got["fid"] == by[(runs[1], "adaptive-K2")]["fid"]
    assert "| adaptive-K2 | 2 |" in (out / "memorisation.md").read_text()

    # benchmarks/sharpening.py: beta 1 scores the kept prior as the table did; a rerun resumes.
    sharp = load_script("sharpening")
    sargs = [str(out), "--priors", "adaptive-K2", "--scales", "1", "3", "--runs", *runs]
    assert sharp.main([*sargs, "--fid-n", "100"]) == 0
    rows = [json.loads(x) for x in (out / "sharpening.jsonl").read_text().splitlines()]
    got = {(r["run"], r["beta"]): r for r in rows}
    for run in runs:
        assert got[(run, 1.0)]["fid"] == pytest.approx(by[(run, "adaptive-K2")]["fid"], rel=1e-6)
        assert got[(run, 3.0)]["spread"] == pytest.approx(3 * got[(run, 1.0)]["spread"], rel=1e-4)
    with monkeypatch.context() as m:
        m.setattr(sharp, "scores", lambda *a, **k: pytest.fail("scored again"))
        m.setattr(sharp, "load_run", lambda *a, **k: pytest.fail("loaded again"))
        assert sharp.main([*sargs, "--fid-n", "100"]) == 0
        assert "| adaptive-K2 | 3 | 2 |" in (out / "sharpening.md").read_text()
        table = [str(out), "--priors", "adaptive-K2", "--scales", "1", "7", "--runs", *runs]
        assert sharp.main([*table, "--table"]) == 0  # beta 7 is not done: left out, not scored
    md = (out / "sharpening.md").read_text()
    assert "| adaptive-K2 | 1 | 2 |" in md and "| adaptive-K2 | 7 |" not in md
    # Each run at the beta best on the other run (beta 1: the FID the table recorded).
    for run, other in (runs, runs[::-1]):
        fids = {1.0: by[(other, "adaptive-K2")]["fid"], 3.0: got[(other, 3.0)]["fid"]}
        beta = min(fids, key=fids.get)
        own = by[(run, "adaptive-K2")]["fid"] if beta == 1 else got[(run, 3.0)]["fid"]
        picked = sharp.chosen(
            {(r["run"], r["label"], r["beta"]): r for r in rows},
            pog.read_results(out),
            ["adaptive-K2"],
            [3.0],
            runs,
        )
        assert {"run": run, "label": "adaptive-K2", "fid": own, "beta": beta} in picked
        # Chosen on the other run given as --choose-on (a held-out test): the same pick.
        held = sharp.chosen(
            {(r["run"], r["label"], r["beta"]): r for r in rows},
            pog.read_results(out),
            ["adaptive-K2"],
            [3.0],
            [run],
            choose_on=[other],
        )
        assert held == [{"run": run, "label": "adaptive-K2", "fid": own, "beta": beta}]
    with monkeypatch.context() as m:
        m.setattr(sharp, "load_run", lambda *a, **k: pytest.fail("loaded again"))
        assert sharp.main([*sargs[:-2], runs[0], "--choose-on", runs[1]]) == 0
    assert "chosen on the --choose-on runs" in (out / "sharpening.md").read_text()
    # A beta given (chosen elsewhere, recorded): every run at that beta, whatever scored best.
    done = {(r["run"], r["label"], r["beta"]): r for r in rows}
    given = sharp.chosen(
        done, pog.read_results(out), ["adaptive-K2"], [], runs, given={"adaptive-K2": 3.0}
    )
    assert given == [
        {"run": run, "label": "adaptive-K2", "fid": got[(run, 3.0)]["fid"], "beta": 3.0}
        for run in runs
    ]
    with monkeypatch.context() as m:
        m.setattr(sharp, "load_run", lambda *a, **k: pytest.fail("loaded again"))
        assert (
            sharp.main(
                [str(out), "--priors", "adaptive-K2", "--runs", *runs, "--beta", "adaptive-K2=3"]
            )
            == 0
        )
    assert (
        "Each run at the beta given by --beta (adaptive-K2 3), by run"
        in (out / "sharpening.md").read_text()
    )
    for bad, message in [
        (["--beta", "adaptive-K2=x"], "expected LABEL=BETA with a number"),
        (["--beta", "nce=2"], "LABEL must be one of --priors"),
        ([], "give --scales, or a --beta for every prior"),
    ]:
        with pytest.raises(SystemExit):
            sharp.main([str(out), "--priors", "adaptive-K2", "--runs", *runs, *bad])
        assert message in capsys.readouterr().err
    assert sharp.main([*sargs, "--table"]) == 0
    assert "Each run at the beta chosen on the other runs" in (out / "sharpening.md").read_text()


def test_stage_figure_points(pog, tmp_path, monkeypatch):
    assert [pog.stages_of(x) for x in ["gaussian", "nce/4k", "tre-K2", "adaptive-K8/ps"]] == [
        0,
        1,
        2,
        8,
    ]
    assert pog.parse_curve("tre=nce,tre-K2") == ("tre", ["nce", "tre-K2"])
    with pytest.raises(SystemExit, match="NAME=LABEL"):
        pog.parse_curve("tre")
    with pytest.raises(SystemExit, match=r"\['tre-K2'\] not among --priors"):
        pog.main(["x", "--priors", "nce", "--curve", "tre=nce,tre-K2", "--out", str(tmp_path)])
    results = [
        {"run": "a", "label": "nce", "fid": 10.0, "fid500": 9.0},
        {"run": "b", "label": "nce", "fid": 14.0, "fid500": 13.0},
        {"run": "a", "label": "adaptive-K2/x", "fid": 8.0, "fid500": 5.0},
        {"run": "b", "label": "adaptive-K2/x", "fid": 6.0},  # not scored at 500 steps
        {"run": "a", "label": "tre-K2", "fid": 20.0},
    ]
    curves = [("adaptive", ["nce", "adaptive-K2/x"]), ("tre", ["nce", "tre-K2"])]
    drawn = []
    with monkeypatch.context() as m:
        m.setattr(pog, "draw_stage_curves", lambda panels, title, path: drawn.append(panels))
        pog.stage_figure(results, curves, ["fid", "fid500"], tmp_path / "s.png")
    (head, fid100), (head500, fid500) = drawn[0]
    assert head == "FID (default chain steps)" and head500 == "FID (500 chain steps)"
    # mean, standard error (|a - b| / 2 for two values; 0 for one) and count at each K
    assert fid100["adaptive"] == [(1, 12.0, 2.0, 2), (2, 7.0, 1.0, 2)]
    assert fid100["tre"] == [(1, 12.0, 2.0, 2), (2, 20.0, 0.0, 1)]
    assert fid500["adaptive"] == [(1, 11.0, 2.0, 2), (2, 5.0, 0.0, 1)]
    path = pog.stage_figure(results, curves, ["fid", "fid500"], tmp_path / "s.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_points_of_a_stage_without_values():
    """A run measured at some stages only (a partly done table): no point, no crash."""
    from latent_ebm.experiments.figures import points_of

    assert points_of({0: [], 1: [1.0, 3.0], 2: [5.0]}) == [(1, 2.0, 1.0, 2), (2, 5.0, 0.0, 1)]
