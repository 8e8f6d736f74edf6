"""The reproduce runner: the experiments' definitions, tiny end-to-end runs through the command
line (tables equal to the runs' reports, reruns retrain nothing, interrupted runs resume) and
its bad inputs."""

import json
import math
import re

import pytest
import torch

from latent_ebm.config import config_to_dict, save_config
from latent_ebm.experiments import EXPERIMENTS, experiment_runs, reproduce
from latent_ebm.experiments import reproduction as rep
from latent_ebm.experiments.figures import stage_curves
from latent_ebm.experiments.settings import describe_setting
from latent_ebm.rundir import load_run
from latent_ebm.train import train
from tests.conftest import run_cli, tiny_config


@pytest.fixture(scope="module")
def classifier_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("classifiers")


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch, classifier_cache):
    """Keep the FID classifier of these tests out of the user's cache."""
    monkeypatch.setenv("LATENT_EBM_CACHE", str(classifier_cache))


def table_rows(markdown: str) -> list[list[str]]:
    """The body cells of the (only) Markdown table."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|---")) + 1
    body = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        body.append([c.strip() for c in line.strip("|").split("|")])
    return body


# The experiments' definitions.


def _shared(run, own: set[str]) -> dict:
    """A run's config without what a model may change: prior.*, the fields ``own`` of some
    model's extra overrides (lebm's post_steps), the held-out class."""
    d = config_to_dict(run.cfg)
    del d["prior"]
    assert d["data"].pop("holdout") == run.holdout
    for key in own:
        section, name = key.split(".")
        del d[section][name]
    return d


@pytest.mark.parametrize("experiment", list(EXPERIMENTS))
def test_models_differ_only_in_the_prior(experiment):
    # cpu scale on digits: the fashion-mnist-cpu base, no Fashion-MNIST files needed.
    runs = experiment_runs(experiment, "digits", "cpu", seed=3)
    own = {o.split("=")[0] for r in runs for o in r.spec.extra}
    assert own <= {"train.post_steps"}
    shared = [_shared(r, own) for r in runs]
    assert all(d == shared[0] for d in shared)
    assert shared[0]["train"]["iters"] == 2400 and shared[0]["train"]["seed"] == 3
    # One run directory per distinct model: rows that share a directory share the config.
    configs = {}
    for r in runs:
        configs.setdefault(r.name, []).append(config_to_dict(r.cfg))
    assert all(c == cs[0] for cs in configs.values() for c in cs)
    assert len({str(cs[0]) for cs in configs.values()}) == len(configs)
    for r in runs:
        assert r.cfg.prior.kind == r.spec.kind
        assert r.cfg.train.post_steps == (20 if r.spec.kind == "lebm" else 30)


def test_experiment_models():
    kinds = {
        name: [(r.cfg.prior.kind, r.cfg.prior.stages) for r in experiment_runs(name, "digits")]
        for name in ("stages", "adaptive", "compare")
    }
    adaptive = [("nce", 1)] + [("adaptive", k) for k in (2, 4, 8)]  # one stage: the nce run
    assert kinds["stages"] == [("gaussian", 0), *adaptive]
    # tre K=1 is the nce run too (test_tre_with_one_ratio_is_the_nce_prior).
    assert kinds["adaptive"] == adaptive + [("nce", 1)] + [("tre", k) for k in (2, 4, 8)]
    labels = [r.spec.label for r in experiment_runs("adaptive", "digits")]
    assert labels[4:] == [f"tre K={k}" for k in (1, 2, 4, 8)]
    assert [kind for kind, _ in kinds["compare"]] == ["gaussian", "nce", "adaptive", "tre", "lebm"]
    assert kinds["compare"][2:4] == [("adaptive", 4), ("tre", 4)]

    anomaly = experiment_runs("anomaly", "digits", "cpu")
    assert [(r.spec.label, r.holdout) for r in anomaly] == [
        (label, c) for label in ("adaptive K=4", "lebm") for c in (0, 1, 2)
    ]
    assert all(r.cfg.train.keep_every == 120 for r in anomaly)  # 20 snapshots to average over
    paper = experiment_runs("anomaly", "digits", "paper", holdout=[4, 1, 4])
    assert [r.holdout for r in paper] == [4, 1, 4, 1]  # unique classes, in the order given
    assert len(experiment_runs("anomaly", "digits", "paper")) == 20  # every class


def test_overrides_apply_to_every_model_but_not_to_per_model_fields():
    plain = experiment_runs("stages", "digits", "cpu")
    runs = experiment_runs("stages", "digits", "cpu", overrides=["prior.prior_samples=langevin"])
    for a, b in zip(plain, runs, strict=True):
        assert b.cfg.prior.prior_samples == "langevin"
        b.cfg.prior.prior_samples = a.cfg.prior.prior_samples
        assert config_to_dict(a.cfg) == config_to_dict(b.cfg)  # nothing else changed
    for field in ("prior.stages=2", "prior.kind=tre", "train.seed=3"):
        with pytest.raises(rep.LatentEBMError, match=re.escape(f"--set {field}: 'stages' sets")):
            experiment_runs("stages", "digits", "cpu", overrides=[field])
    with pytest.raises(rep.LatentEBMError, match=r"train\.post_steps"):
        experiment_runs("compare", "digits", "cpu", overrides=["train.post_steps=5"])


def test_a_scoped_override_applies_to_one_prior_kind_only():
    plain = experiment_runs("compare", "digits", "cpu", overrides=["prior.lr=1e-3"])
    runs = experiment_runs(
        "compare", "digits", "cpu", overrides=["prior.lr=1e-3", "lebm:prior.lr=2e-4"]
    )
    for a, b in zip(plain, runs, strict=True):
        assert b.cfg.prior.lr == (2e-4 if b.spec.kind == "lebm" else 1e-3)
        b.cfg.prior.lr = a.cfg.prior.lr
        assert config_to_dict(a.cfg) == config_to_dict(b.cfg)  # nothing else changed
    with pytest.raises(rep.LatentEBMError, match="no model of prior kind 'lebm'"):
        experiment_runs("stages", "digits", "cpu", overrides=["lebm:prior.lr=2e-4"])
    with pytest.raises(rep.LatentEBMError, match=re.escape("sets prior.stages itself")):
        experiment_runs("compare", "digits", "cpu", overrides=["tre:prior.stages=2"])
    assert describe_setting("lebm:prior.lr=2e-4") == " `lebm` models: `prior.lr=2e-4`."
    assert describe_setting("data.data_dir=C:/d") == " Every model: `data.data_dir=C:/d`."


def test_stage_curves_are_the_mean_and_se_over_seeds():
    def row(label, kind, stages, fid):
        return {"label": label, "kind": kind, "stages": stages, "reports": {"fid": {"value": fid}}}

    results = {
        "models": [
            row("gaussian", "gaussian", 0, 90.0),
            row("nce", "nce", 1, 40.0),
            row("adaptive K=2", "adaptive", 2, 30.0),
            row("tre K=1", "nce", 1, 40.0),
            row("tre K=2", "tre", 2, 35.0),
            row("gaussian", "gaussian", 0, 94.0),
            row("nce", "nce", 1, 44.0),
            row("adaptive K=2", "adaptive", 2, 34.0),
            row("tre K=1", "nce", 1, 44.0),
            row("tre K=2", "tre", 2, 45.0),
        ]
    }
    curves = stage_curves(results, "fid")
    assert curves["adaptive"] == [(0, 92.0, 2.0, 2), (1, 42.0, 2.0, 2), (2, 32.0, 2.0, 2)]
    assert curves["tre"] == [(1, 42.0, 2.0, 2), (2, 40.0, 5.0, 2)]
    assert stage_curves(results, "recon") == {}


def test_tre_with_one_ratio_is_the_nce_prior(tmp_path, digits):
    # One ratio: TRE's waymarks are the prior draws and the posterior samples, its posterior
    # chains run under N(0, I) like stage 0 of the adaptive prior, its loss is the NCE loss.
    # The two runs must agree bit for bit, which is why `tre K=1` reuses the `nce` run.
    states = {}
    for kind in ("nce", "tre"):
        torch.manual_seed(0)
        cfg = tiny_config(f"prior.kind={kind}", "prior.stages=1")
        states[kind] = train(cfg, tmp_path / kind, progress=False, data=digits).state_dict()
    nce, tre = states["nce"], states["tre"]
    assert set(nce) - set(tre) == {"prior.stage"}  # the adaptive prior's stage counter
    assert set(tre) <= set(nce)
    for name, value in tre.items():
        assert torch.equal(value, nce[name]), name


def test_scales():
    cpu = experiment_runs("compare", "fashion-mnist", "cpu")[2].cfg  # adaptive K=4
    assert (cpu.train.iters, cpu.model.nz, cpu.model.ngf, cpu.train.lr) == (2400, 32, 16, 3e-4)
    paper = experiment_runs("compare", "fashion-mnist", "paper")[2].cfg
    # 100 epochs of 600 iterations, a new stage every 25 epochs, the learning rates of A.3.
    assert paper.train.iters // paper.prior.stages == 25 * 600
    assert (paper.train.lr, paper.prior.lr, paper.train.batch_size) == (1e-4, 5e-5, 100)
    assert (rep.SCALES["cpu"]["fid_n"], rep.SCALES["paper"]["fid_n"]) == (10_000, 50_000)


# End to end on digits at the tiny scale (stages shorter than an epoch: expected warnings).

few_iterations = pytest.mark.filterwarnings("ignore:each stage lasts")


@few_iterations
def test_stages_table_and_rerun(tmp_path, capsys, monkeypatch):
    out = tmp_path / "repro"
    args = ["reproduce", "stages", "--dataset", "digits", "--scale", "tiny", "--out", out]
    args += ["--set", "sample.grid=9"]  # a setting for every model
    code, stdout, err = run_cli([*args, "--no-progress"], capsys)
    assert code == 0, err
    assert "[3/5] adaptive K=2: training" in stdout

    md = (out / "stages.md").read_text()
    assert md in stdout  # printed at the end
    assert "`digits`" in md and "16 iterations" in md and "seed 0" in md
    assert "classifier features" in md and "500 generated images" in md
    assert f"`latent-ebm reproduce stages --dataset digits --scale tiny --out {out}" in md
    assert "--set sample.grid=9`" in md and "Every model: `sample.grid=9`." in md
    rows = table_rows(md)
    assert [r[0] for r in rows] == ["gaussian", "nce", *(f"adaptive K={k}" for k in (2, 4, 8))]
    assert [r[2] for r in rows] == ["0", "1", "2", "4", "8"]
    results = json.loads((out / "stages.json").read_text())
    for row, model in zip(rows, results["models"], strict=True):
        run = out / "runs" / model["name"]
        for metric, cell, digits in [("recon", row[3], 4), ("fid", row[4], 2)]:
            report = json.loads((run / "eval" / f"{metric}.json").read_text())
            assert math.isfinite(report["value"]) and report["iteration"] == 16
            assert model["reports"][metric]["value"] == report["value"]
            assert cell == f"{report['value']:.{digits}f}"
        assert model["train_time_s"] == round(load_run(run)[2]["elapsed"], 1)
    assert f"stages.json and {out / 'stages.png'}" in stdout  # the figure of Table 3
    assert (out / "stages.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Rerunning retrains and re-evaluates nothing and writes the same table.
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/checkpoint.pt")}
    assert len(mtimes) == 5

    def forbidden(*args, **kwargs):
        raise AssertionError("a finished run was trained or evaluated again")

    monkeypatch.setattr(rep, "train", forbidden)
    monkeypatch.setattr(rep, "evaluate_run", forbidden)
    lines = []
    tiny = {"dataset": "digits", "scale": "tiny", "progress": False, "echo": lines.append}
    again = reproduce("stages", out, overrides=["sample.grid=9"], **tiny)
    assert again.markdown == md
    assert sum("not retrained" in line for line in lines) == 5
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes

    # Another table reuses the runs it shares with this one: only tre and lebm are new.
    monkeypatch.undo()
    lines.clear()
    with pytest.raises(rep.LatentEBMError, match=r"another config \(sample\.grid is 9 there"):
        reproduce("compare", out, **tiny)  # without the setting of the runs
    assert lines == []  # refused before any output (issue 30)
    reproduce("compare", out, overrides=["sample.grid=9"], **tiny)
    reused = [line.split(":")[0] for line in lines if "not retrained" in line]
    assert reused == ["[1/5] gaussian", "[2/5] nce", "[3/5] adaptive K=4"]
    # 3 shared models x recon, fid, fid-mala
    assert sum("evaluated earlier" in line for line in lines) == 9
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(
        ["gaussian", "nce", "adaptive-K2", "adaptive-K4", "adaptive-K8", "tre-K4", "lebm"]
    )

    # --models: a part of a table, from the same runs; only the claims among its models.
    monkeypatch.setattr(rep, "train", forbidden)
    monkeypatch.setattr(rep, "evaluate_run", forbidden)
    part = reproduce(
        "compare", out, overrides=["sample.grid=9"], models=["adaptive-K4", "nce"], **tiny
    )
    assert [r[0] for r in table_rows(part.markdown)] == ["nce", "adaptive K=4"]  # table order
    assert "--models nce adaptive-K4`" in part.markdown
    claims = part.markdown.split("Claims of the paper, tested here:")[1]
    tested = [line.split(" | ")[0] for line in claims.splitlines() if line.startswith("| ")][1:]
    assert len(tested) == 5, tested  # beats nce on 2 FIDs, no worse on recon; 2 within 10%
    assert sum(" nce (" in c for c in tested) == 3 and sum("within" in c for c in tested) == 2
    assert not any(m in c for c in tested for m in ("gaussian", "lebm", "tre"))


@few_iterations
def test_anomaly_table_resumes_an_interrupted_run(tmp_path, capsys):
    out = tmp_path / "repro"
    first = experiment_runs("anomaly", "digits", "tiny", holdout=[1])[0]
    train(first.cfg, out / "runs" / first.name, max_iters=8, progress=False)  # "a crash"

    args = ["reproduce", "anomaly", "--scale", "tiny", "--dataset", "digits", "--holdout", 1]
    code, stdout, err = run_cli([*args, "--out", out, "--no-progress"], capsys)
    assert code == 0, err
    assert "[1/2] adaptive K=4, held-out class 1: resuming at iteration 8 of 16" in stdout
    assert "[2/2] lebm, held-out class 1: training" in stdout
    md = (out / "anomaly.md").read_text()
    assert "held-out 1" in md and "train.post_steps=20" in md
    rows = table_rows(md)
    assert [r[0] for r in rows] == ["adaptive K=4", "lebm"]
    for row, name in zip(rows, ["adaptive-K4-holdout1", "lebm-holdout1"], strict=True):
        report = json.loads((out / "runs" / name / "eval" / "anomaly.json").read_text())
        value, std = (float(x) for x in row[1].split(" ± "))
        assert 0 < value <= 1 and value == pytest.approx(report["value"], abs=5e-4)
        assert std == pytest.approx(report["std"], abs=5e-4)
        assert report["iterations"] == [14, 15, 16]  # the last 3 snapshots (tiny scale)
    assert load_run(out / "runs" / "adaptive-K4-holdout1")[2]["iteration"] == 16
    # Over two seeds: seed 0's runs are reused, the table gives mean ± SE and the verdict.
    code, stdout, err = run_cli([*args, "--out", out, "--seeds", 2, "--no-progress"], capsys)
    assert code == 0, err
    assert "[1/4] adaptive K=4, seed 0, held-out class 1: trained earlier" in stdout
    md = (out / "anomaly.md").read_text()
    assert "mean ± standard error over the 2 seeds" in md and "β chosen" not in md
    assert "| adaptive K=4 beats lebm (AUPRC (↑)), held-out 1 |" in md


# Bad inputs.


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["bogus"], "unknown experiment 'bogus'"),
        (["stages", "--scale", "huge"], "unknown scale 'huge'"),
        (["stages", "--dataset", "cifar"], "unknown data set 'cifar'"),
        (["anomaly", "--holdout", "11"], "--holdout 11 is not a label of digits"),
        (["stages", "--holdout", "1"], "applies to the anomaly experiment"),
        (["anomaly", "--fid-n", "100"], "do not apply to 'anomaly'"),
        (["compare", "--fid-n", "1"], "--fid-n must be at least 2"),
        (["compare", "--features", "inception"], "needs --weights"),
        (["compare", "--features", "pixels"], "unknown --features 'pixels'"),
        (["stages", "--seed", "-1"], "--seed must be >= 0"),
        (["compare", "--models", "nce", "tre-K2"], "tre-K2 not in 'compare'; its models are"),
    ],
)
def test_bad_inputs_are_one_line(tmp_path, capsys, args, expected):
    dataset = [] if "--dataset" in args else ["--dataset", "digits"]
    scale = [] if "--scale" in args else ["--scale", "tiny"]
    code, _, err = run_cli(["reproduce", *args, *dataset, *scale, "--out", tmp_path], capsys)
    assert code != 0
    assert err.startswith("error: ") and expected in err, err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / args[0]).exists()  # nothing trained


def test_unparsable_option_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_cli(["reproduce", "anomaly", "--holdout", "x", "--out", tmp_path], capsys)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "invalid int value: 'x'" in err
    assert err.startswith("error: ") and len(err.splitlines()) == 1


def test_foreign_run_directories_are_errors(tmp_path, capsys):
    args = ["reproduce", "anomaly", "--dataset", "digits", "--scale", "tiny", "--holdout", 1]
    first = experiment_runs("anomaly", "digits", "tiny", holdout=[1])[0]
    run = tmp_path / "runs" / first.name
    run.mkdir(parents=True)
    (run / "notes.txt").write_text("mine")
    code, _, err = run_cli([*args, "--out", tmp_path], capsys)
    assert code == 1 and "holds no config.yaml" in err and len(err.splitlines()) == 1

    (run / "notes.txt").unlink()
    first.cfg.train.seed = 7  # a run of another command
    save_config(first.cfg, run / "config.yaml")
    code, _, err = run_cli([*args, "--out", tmp_path], capsys)
    assert code == 1 and "train.seed is 7 there, 0 here" in err, err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("text", ['{"value": "0.5"}', "[1, 2]", "\udcff", "{"])
def test_a_damaged_earlier_report_is_evaluated_again(tmp_path, monkeypatch, text):
    """``reproduce`` reuses an earlier report only when it is a report; a damaged one (issue
    30: a string value, not an object, not UTF-8, not JSON) is evaluated again, with a warning,
    and rewritten."""
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "recon.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    calls = []

    def evaluate(run_dir, metric, **kwargs):
        calls.append(metric)
        return {"metric": metric, "value": 0.25, "iteration": 7}

    monkeypatch.setattr(rep, "evaluate_run", evaluate)
    with pytest.warns(UserWarning, match="recon.json.*evaluating recon again"):
        report = rep._evaluate(run, "recon", {}, 7, "[1/1]", lambda line: None, False)
    assert calls == ["recon"] and report["value"] == 0.25
    assert json.loads((run / "eval" / "recon.json").read_text())["value"] == 0.25
